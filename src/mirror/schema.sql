-- ledgertail mirror, schema version 4 (the ledger format's mirror, and the
-- verifiable log).
-- Created once by Mirror::open; later versions add migrations in mirror/mod.rs.
-- The verifiable log's tables (tlog_tiles, tlog_checkpoints,
-- tlog_cosignatures) are in mirror/tree.rs.

-- One row per mirrored event. From these columns alone an auditor rebuilds
-- E′ = {seq, ts, type, payload, prev_hash, id?, key_id?} ∪ extra and
-- recomputes `hash` (see docs/mirror.md, "Auditing without the ledger").
CREATE TABLE events (
    ledger      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT,              -- NULL: the event had no id member
    ts          TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,  -- RFC 8785 canonical text
    extra       TEXT,              -- canonical object of extension members, NULL if none
    prev_hash   TEXT,              -- NULL exactly for seq 0
    hash        TEXT    NOT NULL,
    key_id      TEXT,              -- NULL: unsigned
    sig         TEXT,
    file_id     TEXT    NOT NULL,  -- "dev:ino:fingerprint" of the ledger file the line was in (see files)
    file_offset INTEGER NOT NULL,  -- byte offset of the line in that file
    line_sha256 TEXT,              -- a plain ledger's line: SHA-256 of its bytes as read (hex); NULL for sealed lines
    PRIMARY KEY (ledger, seq)
) WITHOUT ROWID;

CREATE INDEX events_by_id ON events (ledger, id) WHERE id IS NOT NULL;
-- No index by type: it halved the insert rate (docs/performance.md). An
-- analyst who filters by type on a large mirror adds it once, at any time:
--   CREATE INDEX IF NOT EXISTS events_by_type ON events (ledger, type, seq);

-- Per ledger: where reading resumes, the head, the anchor and the halt.
-- Written in the same transaction as the events it covers.
CREATE TABLE checkpoints (
    ledger        TEXT PRIMARY KEY,
    live_path     TEXT    NOT NULL,  -- the ledger's live file, as configured
    file_id       TEXT,              -- file being read ("dev:ino"), NULL before the first file
    file_path     TEXT,              -- its path when last read (informative)
    file_offset   INTEGER NOT NULL DEFAULT 0, -- next byte to read: always just after an LF
    tail_check    BLOB,              -- last bytes before file_offset: a rewrite shows here
    head_seq      INTEGER,
    head_hash     TEXT,
    anchor_seq    INTEGER,
    anchor_hash   TEXT,
    halted        INTEGER NOT NULL DEFAULT 0,
    halt_verdict  TEXT,
    halt_detail   TEXT,
    halt_file     TEXT,
    halt_offset   INTEGER,
    halt_seq      INTEGER,
    halted_at     TEXT,              -- when the halt was first recorded
    generation    INTEGER NOT NULL DEFAULT 0, -- bumped by every commit: one writer per ledger
    updated_at    TEXT    NOT NULL,
    tree_size     INTEGER NOT NULL DEFAULT 0, -- leaves of the Merkle tree: head_seq - anchor_seq + 1
    tree_root     TEXT                        -- its root (hex), NULL before the first event
);

-- Every ledger file a row or a quarantined line came from, with the path
-- it was last read under (once per file, not in every row).
CREATE TABLE files (
    file_id   TEXT PRIMARY KEY,       -- "dev:ino:fingerprint", as in events and quarantine
    path      TEXT NOT NULL,
    seen_at   TEXT NOT NULL,          -- when it was last written down
    ledger    TEXT,                   -- the ledger whose events it holds
    first_seq INTEGER                 -- the seq of its first event (a plain file's lines carry none)
);
CREATE INDEX files_by_ledger ON files (ledger) WHERE ledger IS NOT NULL;

-- Every refused line, kept as evidence.
CREATE TABLE quarantine (
    qid            INTEGER PRIMARY KEY,
    ledger         TEXT    NOT NULL,
    file_id        TEXT    NOT NULL,  -- its path: see files
    file_offset    INTEGER NOT NULL,
    line_length    INTEGER NOT NULL,  -- bytes before the LF
    seq            INTEGER,           -- where the line parsed far enough
    hash           TEXT,
    verdict        TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    line           BLOB    NOT NULL,  -- the first min(length, 4096) bytes
    quarantined_at TEXT    NOT NULL,
    resolved_at    TEXT,              -- set when a reload re-judged the line
    UNIQUE (ledger, file_id, file_offset)
);

-- No index by verdict: a flood of garbage costs its rows and nothing more
-- (the index was a tenth of each row); `status` counts in one pass over
-- the table. An analyst who filters a large quarantine by verdict adds it:
--   CREATE INDEX IF NOT EXISTS quarantine_by_verdict ON quarantine (ledger, verdict);

-- Every halt a ledger ever had, kept when it is lifted: what halted it,
-- where, when, and when and how it was lifted (a restart that found the
-- cause gone, re-judging after a reload, a copy-and-truncate rotation
-- recognised). The halt in force is also in `checkpoints`.
CREATE TABLE halts (
    hid         INTEGER PRIMARY KEY,
    ledger      TEXT    NOT NULL,
    verdict     TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    file        TEXT,
    file_offset INTEGER,
    seq         INTEGER,
    halted_at   TEXT    NOT NULL,
    lifted_at   TEXT,                 -- NULL while it stands
    lifted_how  TEXT
);

CREATE INDEX halts_by_ledger ON halts (ledger, hid);

-- Human-readable facts about this database.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
