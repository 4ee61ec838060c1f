//! The uploader and its lanes against the in-memory store, on a real
//! SQLite mirror: one table row per way the central head can stand
//! against the mirror, and the faults a store can have.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::memory::{Fault, Ledger, Memory};
use super::*;
use crate::config::{FileConfig, Overrides, PostgresSettings, Settings};
use crate::ledger::columns::StoredEvent;
use crate::mirror::Durability;
use crate::producer::chain_lines as chain;
use crate::shipper::{Batching, Shipper};

#[test]
fn backoff_doubles_to_a_ceiling() {
    assert_eq!(backoff(1), Duration::from_millis(250));
    assert_eq!(backoff(2), Duration::from_millis(500));
    assert_eq!(backoff(5), Duration::from_secs(4));
    assert_eq!(backoff(40), MAX_BACKOFF);
}

#[test]
fn a_ring_wakes_and_is_taken_once() {
    let bell = Doorbell::new(3);
    bell.ring(1);
    assert_eq!(bell.wait(Duration::from_secs(5)), vec![false, true, false]);
    let start = Instant::now();
    assert_eq!(bell.wait(Duration::from_millis(30)), vec![false; 3]);
    assert!(start.elapsed() >= Duration::from_millis(30));
}

/// A mirror of ledger `app` holding seqs `from..to` of one chain, and
/// that chain's rows as the mirror stored them.
struct Local {
    _dir: tempfile::TempDir,
    db: PathBuf,
    rows: Vec<StoredEvent>,
}

/// A mirror of `lines[from..to]`.
fn local(lines: &[Vec<u8>], from: usize, to: usize) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    std::fs::write(&path, lines[from..to].concat()).unwrap();
    let db = dir.path().join("m.db");
    let over = Overrides {
        ledger: Some(path),
        db: Some(db.clone()),
        ..Overrides::default()
    };
    let settings = Settings::resolve(&FileConfig::default(), &over, dir.path()).unwrap();
    let mirror = Mirror::open(&db, Access::ReadWrite).unwrap();
    let mut s = Shipper::new(settings.ledgers[0].clone(), mirror, Batching::events(100)).unwrap();
    let stop = AtomicBool::new(false);
    let report = s
        .catch_up_until(&stop, &|| false, &mut |_| {}, Durability::Alone)
        .unwrap();
    assert_eq!(report.mirrored(), (to - from) as u64);
    let rows = Mirror::open(&db, Access::ReadOnly)
        .unwrap()
        .events_from("app", 0, 1000)
        .unwrap();
    Local {
        _dir: dir,
        db,
        rows,
    }
}

fn settings(dir: &Path) -> PostgresSettings {
    let table = crate::config::PostgresTable {
        url: Some("postgres://lt@127.0.0.1:1/fleet".into()),
        source: Some("host-a".into()),
        batch_max_millis: Some(0),
        batch_max_events: Some(3),
        ..Default::default()
    };
    table.resolve(dir).unwrap()
}

fn uploader(l: &Local, store: &Memory) -> Uploader {
    let cfg = settings(l.db.parent().unwrap());
    let names = ["app".to_owned()];
    Uploader::with_store(
        Box::new(store.clone()),
        &cfg,
        &names,
        l.db.clone(),
        None,
        None,
    )
}

/// Rounds until nothing is left to do at once, sleeping through short
/// waits (a backoff) up to `patience`.
fn settle(u: &mut Uploader, patience: Duration) {
    let end = Instant::now() + patience;
    while Instant::now() < end {
        match u.round(&[true]) {
            Round::Busy => {}
            Round::Idle(d) if d < Duration::from_secs(1) => std::thread::sleep(d),
            Round::Idle(_) => {
                let waiting = matches!(u.lanes[0].pos, Pos::WaitLocal { .. } | Pos::NothingYet);
                if waiting || u.settled().unwrap() != Settled::Pending {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The central ledger another writer left: `rows` of the local chain.
fn central(rows: &[StoredEvent]) -> Ledger {
    Ledger {
        anchor: (rows[0].seq, rows[0].hash.clone()),
        rows: rows
            .iter()
            .map(|r| (r.seq, r.hash.clone(), r.prev_hash.clone()))
            .collect(),
        shipper: Some("host-a/old".into()),
        lease_until: None,
    }
}

fn other_hash() -> String {
    "f".repeat(64)
}

/// What a lane's position came to, in a word, with its text.
fn outcome(u: &Uploader) -> (&'static str, String) {
    match &u.lanes[0].pos {
        Pos::Ready { next, .. } => ("ready", next.to_string()),
        Pos::WaitLocal { central } => ("waiting", central.to_string()),
        Pos::Fenced { .. } => ("fenced", u.lanes[0].said.clone().unwrap_or_default()),
        Pos::Halted(why) => ("halted", why.clone()),
        Pos::Ahead(why) => ("ahead", why.clone()),
        Pos::Unknown => ("unknown", String::new()),
        Pos::NothingYet => ("nothing yet", String::new()),
    }
}

struct Case {
    name: &'static str,
    /// The mirror holds seqs `local.0..local.1` of the chain.
    local: (usize, usize),
    /// The central ledger before the uploader starts, made from the rows
    /// of the whole chain (`local.1 + 3` events), with edits.
    central: fn(&[StoredEvent]) -> Option<Ledger>,
    files_read: bool,
    /// The lane's position afterwards, and a phrase its text holds.
    expect: (&'static str, &'static str),
    /// The central seqs afterwards.
    shipped: std::ops::Range<u64>,
}

const CASES: &[Case] = &[
    Case {
        name: "an empty store receives every mirrored row",
        local: (0, 7),
        central: |_| None,
        files_read: false,
        expect: ("ready", "7"),
        shipped: 0..7,
    },
    Case {
        name: "a central head equal to the mirror's row ships what follows",
        local: (0, 7),
        central: |c| Some(central(&c[..3])),
        files_read: false,
        expect: ("ready", "7"),
        shipped: 0..7,
    },
    Case {
        name: "a central head with another hash at the same seq is a fork",
        local: (0, 7),
        central: |c| {
            let mut l = central(&c[..3]);
            l.rows[2].1 = other_hash();
            Some(l)
        },
        files_read: false,
        expect: ("halted", "a fork: the central row at seq 2"),
        shipped: 0..3,
    },
    Case {
        name: "a central head past the mirror is waited for while files are read",
        local: (0, 5),
        central: |c| Some(central(&c[..8])),
        files_read: false,
        expect: ("waiting", "7"),
        shipped: 0..8,
    },
    Case {
        name: "a central head past every line of the files halts the lane",
        local: (0, 5),
        central: |c| Some(central(&c[..8])),
        files_read: true,
        expect: ("ahead", "the central head is seq 7, past everything"),
        shipped: 0..8,
    },
    Case {
        name: "another shipper's live lease fences the lane",
        local: (0, 7),
        central: |c| {
            let mut l = central(&c[..3]);
            l.shipper = Some("host-a/other".into());
            l.lease_until = Some(Instant::now() + Duration::from_secs(60));
            Some(l)
        },
        files_read: false,
        expect: ("fenced", "is being shipped by host-a/other"),
        shipped: 0..3,
    },
    Case {
        name: "another shipper's lease that ran out is taken over",
        local: (0, 7),
        central: |c| {
            let mut l = central(&c[..3]);
            l.shipper = Some("host-a/other".into());
            l.lease_until = Some(Instant::now());
            Some(l)
        },
        files_read: false,
        expect: ("ready", "7"),
        shipped: 0..7,
    },
    Case {
        name: "a ledger registered with another anchor and no rows halts the lane",
        local: (0, 7),
        central: |_| {
            Some(Ledger {
                anchor: (0, other_hash()),
                rows: Vec::new(),
                shipper: None,
                lease_until: None,
            })
        },
        files_read: false,
        expect: ("halted", "registered with anchor seq 0"),
        shipped: 0..0,
    },
    Case {
        name: "a mirror that starts right after the central head ships from its anchor",
        local: (3, 7),
        central: |c| Some(central(&c[..3])),
        files_read: false,
        expect: ("ready", "7"),
        shipped: 0..7,
    },
    Case {
        name: "a mirror that starts after a central head it does not link to is a fork",
        local: (3, 7),
        central: |c| {
            let mut l = central(&c[..3]);
            l.rows[2].1 = other_hash();
            Some(l)
        },
        files_read: false,
        expect: ("halted", "is not the event before this mirror's anchor"),
        shipped: 0..3,
    },
    Case {
        name: "a central head before the mirror's anchor leaves a gap and halts the lane",
        local: (4, 7),
        central: |c| Some(central(&c[..2])),
        files_read: false,
        expect: ("halted", "seqs 2 to 3 are in neither"),
        shipped: 0..2,
    },
    Case {
        name: "nothing mirrored and nothing central waits quietly",
        local: (0, 0),
        central: |_| None,
        files_read: false,
        expect: ("nothing yet", ""),
        shipped: 0..0,
    },
];

#[test]
fn each_way_the_central_head_can_stand_against_the_mirror_is_judged_as_the_table_says() {
    let mut failed = Vec::new();
    for case in CASES {
        // The central rows come from the same chain, longer than the
        // mirror's, so that a central head can stand past it.
        let lines = chain(case.local.1 + 3);
        let whole = local(&lines, 0, lines.len());
        let l = local(&lines, case.local.0, case.local.1);
        let store = Memory::default();
        if let Some(ledger) = (case.central)(&whole.rows) {
            store.put("app", ledger);
        }
        let mut u = uploader(&l, &store);
        if case.files_read {
            u.mirror_is_complete();
        }
        settle(&mut u, Duration::from_secs(3));
        let (pos, text) = outcome(&u);
        let shipped = store.seqs("app");
        let want: Vec<u64> = case.shipped.clone().collect();
        if pos != case.expect.0 || !text.contains(case.expect.1) || shipped != want {
            failed.push(format!(
                "{}: got {pos} ({text}), central {shipped:?}; want {} ({}), central {want:?}",
                case.name, case.expect.0, case.expect.1
            ));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn a_commit_whose_outcome_was_not_told_is_settled_by_the_central_head_and_nothing_ships_twice() {
    let lines = chain(7);
    let l = local(&lines, 0, 7);
    let store = Memory::default();
    store.fail(Some(Fault::CommitUntold));
    let mut u = uploader(&l, &store);
    let Round::Idle(_) = u.round(&[true]) else {
        panic!("an untold outcome must drop the session and wait")
    };
    assert_eq!(
        u.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Unknown)
    );
    assert_eq!(outcome(&u).0, "unknown", "the lane reads the head again");
    let after_first = store.commits();
    settle(&mut u, Duration::from_secs(3));
    assert_eq!(outcome(&u), ("ready", "7".to_owned()));
    assert_eq!(store.seqs("app"), (0..7).collect::<Vec<u64>>());
    // The batch that committed untold was not sent again: the ones after
    // it carry only the rows past it.
    assert_eq!(store.commits() - after_first, 7usize.div_ceil(3) - 1);
}

#[test]
fn a_store_that_cannot_be_reached_ships_nothing_and_then_the_whole_backlog() {
    let lines = chain(5);
    let l = local(&lines, 0, 5);
    let store = Memory::default();
    store.fail(Some(Fault::Down));
    let mut u = uploader(&l, &store);
    let Round::Idle(wait) = u.round(&[true]) else {
        panic!("a store that is down must be waited for")
    };
    assert_eq!(wait, backoff(1));
    assert_eq!(
        u.last_error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Unreachable)
    );
    assert!(store.seqs("app").is_empty());
    store.fail(None);
    settle(&mut u, Duration::from_secs(3));
    assert!(u.last_error.is_none());
    assert_eq!(store.seqs("app"), (0..5).collect::<Vec<u64>>());
    assert_eq!(u.settled().unwrap(), Settled::CaughtUp);
}

#[test]
fn a_clean_stop_gives_the_leases_up_so_a_successor_ships_at_once() {
    let lines = chain(4);
    let l = local(&lines, 0, 4);
    let store = Memory::default();
    let mut u = uploader(&l, &store);
    settle(&mut u, Duration::from_secs(3));
    u.release();
    // A second mirror of the same source (a rebuilt one) is not fenced.
    let rebuilt = local(&lines, 0, 4);
    let mut next = uploader(&rebuilt, &store);
    settle(&mut next, Duration::from_secs(3));
    assert_eq!(outcome(&next), ("ready", "4".to_owned()));
    assert_ne!(
        store.ledger("app").unwrap().shipper,
        u.shipper,
        "the successor holds the lease now"
    );
}
