//! The tree audited from the rows (`verify --db`, contract §7): the tree
//! recomputed from the `hash` column of every event, from the anchor, and
//! compared with the tree the mirror stores (its tiles' root at the head)
//! and with every checkpoint it signed (the recomputed root at each
//! signed size). A row rewritten in SQLite, a tile edited, or a signed
//! checkpoint that the rows no longer support shows here.

use std::ops::ControlFlow;

use serde::Serialize;

use crate::ledger::tiles::Edge;
use crate::ledger::tlog::{hash_base64, SignedCheckpoint};
use crate::ledger::tree::leaf_hash;
use crate::ledger::Hash;
use crate::mirror::{Mirror, MirrorError};

/// What the audit found for one ledger.
#[derive(Debug, Default, Serialize)]
pub struct TreeAudit {
    /// Leaves recomputed from the rows.
    pub size: u64,
    /// The recomputed root (base64).
    pub root: Option<String>,
    /// Signed checkpoints whose root the rows reproduce.
    pub checkpoints_checked: u64,
    /// What does not hold.
    pub problems: Vec<String>,
}

impl TreeAudit {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Compares the signed checkpoints of the tree's current size with its root.
fn check(
    edge: &Edge,
    pending: &mut std::iter::Peekable<std::slice::Iter<'_, SignedCheckpoint>>,
    checked: &mut u64,
    problems: &mut Vec<String>,
) {
    while let Some(c) = pending.next_if(|c| c.checkpoint.size == edge.size()) {
        let root = edge.root();
        if root == c.checkpoint.root {
            *checked += 1;
        } else {
            problems.push(format!(
                "the signed checkpoint of size {} has root {}, the rows give {}",
                c.checkpoint.size,
                hash_base64(&c.checkpoint.root),
                hash_base64(&root)
            ));
        }
    }
}

pub fn audit(mirror: &Mirror, ledger: &str) -> Result<TreeAudit, MirrorError> {
    let mut out = TreeAudit::default();
    let Some(state) = mirror.state(ledger)? else {
        return Ok(out);
    };
    let (Some(anchor), Some(head)) = (state.anchor, state.head) else {
        return Ok(out);
    };
    let signed: Vec<SignedCheckpoint> = mirror
        .checkpoints_signed(ledger)?
        .iter()
        .filter_map(|c| match SignedCheckpoint::parse(&c.note) {
            Ok(s) => Some(s),
            Err(e) => {
                out.problems.push(format!(
                    "the signed checkpoint of size {} does not parse: {e}",
                    c.size
                ));
                None
            }
        })
        .collect();
    let mut pending = signed.iter().peekable();
    let mut edge = Edge::default();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut expected = anchor.seq;
    mirror.for_each_event(ledger, |row| {
        if row.seq < anchor.seq {
            return ControlFlow::Continue(());
        }
        if row.seq > head.seq {
            return ControlFlow::Break(());
        }
        let Some(hash) = (row.seq == expected).then(|| Hash::from_hex(&row.hash)).flatten() else {
            problems.push(format!("the row at seq {expected} is missing or its hash is not 64 hex digits: the tree stops there"));
            return ControlFlow::Break(());
        };
        edge.push(leaf_hash(&hash.0), &mut Vec::new());
        expected += 1;
        check(&edge, &mut pending, &mut checked, &mut problems);
        ControlFlow::Continue(())
    })?;
    for c in pending {
        problems.push(format!(
            "a checkpoint of size {} was signed, but the rows make a tree of {} leaves",
            c.checkpoint.size,
            edge.size()
        ));
    }
    let root = edge.root();
    match mirror.tree_head(ledger)? {
        Some(t) if t.size == edge.size() && t.root == root => {
            match mirror.tree_root_at(ledger, t.size) {
                Ok(stored) if stored == root => {}
                Ok(stored) => problems.push(format!("the stored tiles give root {}, the rows {}", hash_base64(&stored), hash_base64(&root))),
                Err(e) => problems.push(format!("the stored tiles cannot be read: {e}")),
            }
        }
        Some(t) => problems.push(format!(
            "the mirror records a tree of {} leaves with root {}, the rows give {} leaves with root {}",
            t.size,
            hash_base64(&t.root),
            edge.size(),
            hash_base64(&root)
        )),
        None => problems.push("the mirror records no tree for this ledger".into()),
    }
    out.size = edge.size();
    out.root = Some(hash_base64(&root));
    out.checkpoints_checked = checked;
    out.problems.extend(problems);
    Ok(out)
}
