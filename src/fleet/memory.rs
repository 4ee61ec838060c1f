//! A central store in memory, for the lane's table tests: the rules the
//! PostgreSQL functions and triggers enforce (registration with the first
//! batch, the fence, the expected head, rows that start at the head and
//! link, all of a group or none), and faults a test can order: a store
//! that cannot be reached, and a commit whose outcome is not told.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::store::{CentralSession, CentralStore};
use crate::postgres::{CentralHead, ErrorKind, PgError, Shipment};

/// One ledger as the store holds it.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub anchor: (u64, String),
    /// Every row shipped, (seq, hash, prev_hash), in seq order.
    pub rows: Vec<(u64, String, Option<String>)>,
    pub shipper: Option<String>,
    pub lease_until: Option<Instant>,
}

impl Ledger {
    fn head(&self) -> Option<(u64, String)> {
        self.rows.last().map(|(s, h, _)| (*s, h.clone()))
    }
}

/// What the next call to the store does instead of its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails as a store that cannot be reached.
    Down,
    /// The next shipment commits, and the caller is told the outcome is
    /// unknown (the connection dropped after COMMIT was sent).
    CommitUntold,
}

#[derive(Default)]
struct State {
    ledgers: HashMap<String, Ledger>,
    fault: Option<Fault>,
    /// Shipping transactions committed.
    commits: usize,
}

/// A handle on the store: clones share it, so a test keeps one while the
/// uploader owns another.
#[derive(Clone, Default)]
pub struct Memory {
    state: Arc<Mutex<State>>,
}

impl Memory {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `ledger` in the store as another writer left it.
    pub fn put(&self, name: &str, ledger: Ledger) {
        self.with(|s| s.ledgers.insert(name.to_owned(), ledger));
    }

    pub fn ledger(&self, name: &str) -> Option<Ledger> {
        self.with(|s| s.ledgers.get(name).cloned())
    }

    /// The seqs shipped for `name`.
    pub fn seqs(&self, name: &str) -> Vec<u64> {
        self.ledger(name)
            .map(|l| l.rows.iter().map(|r| r.0).collect())
            .unwrap_or_default()
    }

    pub fn fail(&self, fault: Option<Fault>) {
        self.with(|s| s.fault = fault);
    }

    pub fn commits(&self) -> usize {
        self.with(|s| s.commits)
    }
}

fn down() -> PgError {
    PgError::new(ErrorKind::Unreachable, "the in-memory store is down")
}

impl CentralStore for Memory {
    fn shown(&self) -> &str {
        "memory"
    }

    fn open(&self) -> Result<Box<dyn CentralSession>, PgError> {
        if self.with(|s| s.fault) == Some(Fault::Down) {
            return Err(down());
        }
        Ok(Box::new(self.clone()))
    }
}

impl CentralSession for Memory {
    fn read_heads(&self, ledgers: &[&str]) -> Result<HashMap<String, CentralHead>, PgError> {
        self.with(|s| {
            if s.fault == Some(Fault::Down) {
                return Err(down());
            }
            let now = Instant::now();
            Ok(ledgers
                .iter()
                .filter_map(|name| {
                    let l = s.ledgers.get(*name)?;
                    let head = CentralHead {
                        anchor_seq: l.anchor.0,
                        anchor_hash: l.anchor.1.clone(),
                        head: l.head(),
                        shipper: l.shipper.clone(),
                        leased: l.lease_until.is_some_and(|u| u > now),
                    };
                    Some(((*name).to_owned(), head))
                })
                .collect())
        })
    }

    fn ship(&self, shipper: &str, lease: Duration, parts: &[Shipment<'_>]) -> Result<(), PgError> {
        self.with(|s| {
            if s.fault == Some(Fault::Down) {
                return Err(down());
            }
            // All of the group or none: the parts are applied to a copy.
            let mut ledgers = s.ledgers.clone();
            for part in parts {
                let l = ledgers.entry(part.ledger.to_owned());
                ship_part(l, shipper, lease, part)?;
            }
            s.ledgers = ledgers;
            s.commits += 1;
            if s.fault.take() == Some(Fault::CommitUntold) {
                return Err(PgError::new(
                    ErrorKind::Unknown,
                    "the connection dropped after COMMIT was sent",
                ));
            }
            Ok(())
        })
    }

    fn release(&self, ledgers: &[&str], shipper: &str) -> Result<(), PgError> {
        self.with(|s| {
            for name in ledgers {
                if let Some(l) = s.ledgers.get_mut(*name) {
                    if l.shipper.as_deref() == Some(shipper) {
                        l.lease_until = None;
                    }
                }
            }
            Ok(())
        })
    }
}

/// One part, as `ship_begin` and the chain trigger judge it.
fn ship_part(
    entry: std::collections::hash_map::Entry<'_, String, Ledger>,
    shipper: &str,
    lease: Duration,
    part: &Shipment<'_>,
) -> Result<(), PgError> {
    let until = Some(Instant::now() + lease);
    let l = entry.or_insert_with(|| Ledger {
        anchor: (part.anchor.0, part.anchor.1.to_owned()),
        rows: Vec::new(),
        shipper: None,
        lease_until: None,
    });
    let head = l.head();
    if l.shipper.as_deref().is_some_and(|s| s != shipper)
        && l.lease_until.is_some_and(|u| u > Instant::now())
    {
        let text = format!("ledger {} is being shipped by another", part.ledger);
        return Err(PgError::new(ErrorKind::Fenced, text));
    }
    let expected = part.expected.map(|(s, h)| (s, h.to_owned()));
    if head != expected {
        let text = format!("the central head is {head:?}, not {expected:?}");
        return Err(PgError::new(ErrorKind::HeadMoved, text));
    }
    if head.is_none() && (l.anchor.0, l.anchor.1.as_str()) != part.anchor {
        let text = format!("registered with anchor seq {}", l.anchor.0);
        return Err(PgError::new(ErrorKind::Chain, text));
    }
    let mut last = head;
    for row in part.rows {
        let links = match &last {
            None => row.seq == l.anchor.0 && row.hash == l.anchor.1,
            Some((seq, hash)) => row.seq == seq + 1 && row.prev_hash.as_ref() == Some(hash),
        };
        if !links {
            let text = format!("the row at seq {} does not extend the chain", row.seq);
            return Err(PgError::new(ErrorKind::Chain, text));
        }
        l.rows
            .push((row.seq, row.hash.clone(), row.prev_hash.clone()));
        last = Some((row.seq, row.hash.clone()));
    }
    l.shipper = Some(shipper.to_owned());
    l.lease_until = until;
    Ok(())
}
