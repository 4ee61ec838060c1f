//! The verifiable log's figures, next to floors of the same run:
//!
//! - catch-up of N events (`replay`, which keeps the tree in the rows'
//!   transactions) and the same mirror's tree built alone on open (the
//!   migration of an existing mirror: the tree stripped, then a `replay`
//!   with nothing to mirror);
//! - the tree's own work in that catch-up, timed in this process on the
//!   same events' hashes: the leaf hashes, the edge grown batch by batch
//!   (the catch-up's commit size) with the root and the partial tiles to
//!   store after each, as `mirror::tree::append` does them with its edge
//!   kept between commits; and the bytes those tiles add to each commit
//!   next to the mirror's bytes per commit. Its share of the catch-up time
//!   is the throughput it can cost at most, as if all of it were on the
//!   commit path;
//! - inclusion and consistency proofs from a mirror of `proof_leaves`
//!   leaves (10M in a full run: the rows (a hash each, the other columns
//!   minimal) and the tiles are written straight into a mirror, as the
//!   mirror stores them; no ledger of 5 GB is needed to measure reads of
//!   them), timed through the library's `Mirror::inclusion_proof`, each
//!   checked against the root.

use std::path::Path;
use std::time::Instant;

use ledgertail::ledger::tiles::Edge;
use ledgertail::ledger::tree::{leaf_hash, verify_consistency, verify_inclusion};
use ledgertail::ledger::Hash;
use ledgertail::mirror::{Access, Mirror};

use super::{percentile, replay};

/// Makes the mirror one of schema 2 again: no tree (and none of what
/// later schemas added, such as the halts history).
fn strip_tree(db: &Path) {
    let c = rusqlite::Connection::open(db).expect("open the mirror");
    c.execute_batch(
        "DROP TABLE tlog_tiles; DROP TABLE tlog_checkpoints; DROP TABLE tlog_cosignatures; DROP TABLE halts;
         ALTER TABLE checkpoints DROP COLUMN tree_size; ALTER TABLE checkpoints DROP COLUMN tree_root;
         PRAGMA user_version = 2; VACUUM;",
    )
    .expect("strip the tree");
}

pub fn tlog(binary: &Path, dir: &Path, ledger: &Path, events: u64, proof_leaves: u64) {
    std::fs::create_dir_all(dir).expect("bench folder");
    println!("\n## The verifiable log\n");
    let db = dir.join("tlog.db");
    let _ = std::fs::remove_file(&db);
    let (catch_up, _) = replay(binary, ledger, &db, None);
    tree_share(&db, catch_up, events);
    strip_tree(&db);
    let (migration, _) = replay(binary, ledger, &db, None);
    let size: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT tree_size FROM checkpoints", [], |r| r.get(0)))
        .expect("the tree's size");
    assert_eq!(size as u64, events, "the migration built the whole tree");
    println!("| events | catch-up s (rows and tree) | migration s (tree built on open) | migration target |");
    println!("|---|---|---|---|");
    println!(
        "| {events} | {catch_up:.2} | {migration:.2} | ≤ 10 s per 1M: {:.2} s per 1M |\n",
        migration * 1e6 / events as f64
    );
    proofs(&dir.join("proofs.db"), proof_leaves);
}

/// The tree's work in a catch-up of the mirror `db`, timed alone.
fn tree_share(db: &Path, catch_up: f64, events: u64) {
    let c = rusqlite::Connection::open(db).expect("open the mirror");
    let hashes: Vec<Hash> = c
        .prepare("SELECT hash FROM events ORDER BY ledger, seq")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .map(|h| h.map(|h| Hash::from_hex(&h).expect("a hash")))
                .collect()
        })
        .expect("read the hashes");
    let mirror_bytes = std::fs::metadata(db).map_or(0, |m| m.len());
    drop(c);
    let batch = ledgertail::config::DEFAULT_BATCH_MAX_EVENTS;
    let commits = hashes.len().div_ceil(batch).max(1);
    let mut best = f64::INFINITY;
    let mut tile_bytes = 0usize;
    for _ in 0..3 {
        let started = Instant::now();
        let (mut edge, mut full) = (Edge::default(), Vec::new());
        let mut stored = 0usize;
        for chunk in hashes.chunks(batch) {
            for h in chunk {
                edge.push(leaf_hash(&h.0), &mut full);
            }
            // What a commit stores: the tiles completed and the partial
            // ones above level 0, as blobs, and the root.
            for (_, t) in full.drain(..).filter(|(id, _)| id.level > 0) {
                stored +=
                    std::hint::black_box(t.iter().flat_map(|h| h.0).collect::<Vec<u8>>()).len();
            }
            for (_, t) in edge.partial().filter(|(id, _)| id.level > 0) {
                stored +=
                    std::hint::black_box(t.iter().flat_map(|h| h.0).collect::<Vec<u8>>()).len();
            }
            std::hint::black_box(edge.root());
        }
        best = best.min(started.elapsed().as_secs_f64());
        tile_bytes = stored;
    }
    let per_commit = tile_bytes as f64 / commits as f64;
    let mirror_per_commit = mirror_bytes as f64 / commits as f64;
    println!("The tree's own work in that catch-up, timed alone in this process (best of 3) on the same {} hashes, in commits of {batch}:\n", hashes.len());
    println!("| tree work s | ÷ catch-up s | tile bytes per commit | mirror bytes per commit | tile ÷ mirror bytes | target |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {best:.3} | {:.3} | {per_commit:.0} | {mirror_per_commit:.0} | {:.3} | ≤ 0.05 of catch-up |",
        best / catch_up,
        per_commit / mirror_per_commit.max(1.0)
    );
    assert_eq!(
        hashes.len() as u64,
        events,
        "the catch-up mirrored every event"
    );
    println!();
}

/// The event hash of leaf `i` in the proofs' mirror.
fn event_hash(i: u64) -> Hash {
    use sha2::Digest as _;
    Hash(sha2::Sha256::digest(i.to_be_bytes()).into())
}

/// A mirror whose tree of `leaves` leaves is stored as the mirror stores it.
fn tree_mirror(db: &Path, leaves: u64) -> Hash {
    let _ = std::fs::remove_file(db);
    drop(Mirror::open(db, Access::ReadWrite).expect("create a mirror"));
    let c = rusqlite::Connection::open(db).expect("open the mirror");
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; BEGIN;")
        .expect("begin");
    let mut insert = c
        .prepare("INSERT OR REPLACE INTO tlog_tiles (ledger, level, idx, hashes) VALUES ('bench', ?1, ?2, ?3)")
        .expect("prepare");
    let mut event = c
        .prepare("INSERT INTO events (ledger, seq, ts, type, payload, hash, file_id, file_offset) VALUES ('bench', ?1, 't', 'e', '0', ?2, 'f', 0)")
        .expect("prepare");
    let mut edge = Edge::default();
    let mut full = Vec::new();
    for i in 0..leaves {
        let h = event_hash(i);
        event
            .execute(rusqlite::params![i as i64, h.to_hex()])
            .expect("insert");
        edge.push(leaf_hash(&h.0), &mut full);
        for (id, hashes) in full.drain(..).filter(|(id, _)| id.level > 0) {
            let blob: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
            insert
                .execute(rusqlite::params![id.level, id.index as i64, blob])
                .expect("insert");
        }
    }
    for (id, hashes) in edge.partial().filter(|(id, _)| id.level > 0) {
        let blob: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        insert
            .execute(rusqlite::params![id.level, id.index as i64, blob])
            .expect("insert");
    }
    drop((insert, event));
    c.execute(
        "INSERT INTO checkpoints (ledger, live_path, anchor_seq, head_seq, updated_at, tree_size, tree_root) VALUES ('bench', 'x', 0, ?1, 't', ?2, ?3)",
        rusqlite::params![leaves as i64 - 1, leaves as i64, edge.root().to_hex()],
    )
    .expect("checkpoint row");
    c.execute_batch("COMMIT;").expect("commit");
    edge.root()
}

fn proofs(db: &Path, leaves: u64) {
    let started = Instant::now();
    let root = tree_mirror(db, leaves);
    let built = started.elapsed().as_secs_f64();
    let mirror = Mirror::open(db, Access::ReadOnly).expect("open the mirror");
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..1000 {
        // xorshift: spread over the whole tree, no dependency.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % leaves;
        let t = Instant::now();
        let proof = mirror
            .inclusion_proof("bench", index, leaves)
            .expect("read")
            .expect("in range");
        inclusion.push(t.elapsed().as_secs_f64() * 1e3);
        verify_inclusion(
            &leaf_hash(&event_hash(index).0),
            index,
            leaves,
            &proof,
            &root,
        )
        .expect("the proof verifies");
        let old = index.max(1);
        let t = Instant::now();
        let proof = mirror
            .consistency_proof("bench", old, leaves)
            .expect("read")
            .expect("in range");
        let old_root = mirror.tree_root_at("bench", old).expect("old root");
        consistency.push(t.elapsed().as_secs_f64() * 1e3);
        verify_consistency(old, leaves, &old_root, &root, &proof).expect("the proof verifies");
    }
    inclusion.sort_by(f64::total_cmp);
    consistency.sort_by(f64::total_cmp);
    println!("Proofs from a mirror whose tree has {leaves} leaves (its rows and tiles written in {built:.1} s), 1000 random events, each proof checked against the root:\n");
    println!("| proof | p50 ms | p99 ms | max ms | target |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("inclusion", &inclusion),
        ("consistency (with the old root)", &consistency),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | ≤ 10 ms |",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    }
}
