//! The central schema: `events`, `ledgers` and `source_grants`, created
//! when missing and migrated in order like the SQLite mirror's, and the
//! functions and triggers through which the database itself keeps each
//! chain, and each host to its own history, whoever writes to it.
//!
//! - `ship_begin_many` (and `ship_begin`, one ledger, for sidecars of the
//!   previous version): the start of every shipping transaction. The
//!   session's role must be granted the source (`may_ship`: the schema's
//!   owner, or a `source_grants` row for the role or a role it is a
//!   member of); a lease lasts at most a day; each ledger is registered
//!   on its first batch, fenced against another shipper's live lease,
//!   and its head must be the one the batch follows. It records the
//!   transaction that holds the lease (`lease_xact`).
//! - `events_chain` (after each INSERT statement, over its new rows as a
//!   transition table, set-based over every ledger of the statement):
//!   each ledger must be registered and leased by this very transaction;
//!   its rows must start right after its head (or at its anchor, with the
//!   anchor's hash), leave no gap, and each link to the one before; the
//!   head then moves to the last row. So no row goes in except from a
//!   transaction that a role granted its source began.
//! - `events_immutable`: UPDATE, DELETE and TRUNCATE of events are refused.
//! - `ledgers_guard`, `ledgers_fixed` and `ledgers_heads_there`: a
//!   ledger's anchor never changes, its head only moves forward and only
//!   to a row that is there, and it is never deleted.
//!
//! Versions change tables or functions' signatures, and a sidecar refuses
//! a version newer than its own unless that schema's `schema_sidecars`
//! names its version or an older one as still shipping into it (a newer
//! migration that changes nothing older sidecars rely on creates or
//! keeps that table, readable by every role). Revisions within a version
//! keep the tables sidecars write and the functions they call (revision
//! 1: the same rules checked set-based, a few passes a transaction
//! whatever its number of ledgers; revision 2: the analysts' view
//! `events_json`, see `payload_json`; revision 3: the shipping functions
//! planned once a session, not at every call), so any sidecar of that
//! version ships into any revision of it.
//!
//! The functions are SECURITY DEFINER (owned by the schema's owner), so
//! an ingest role needs only USAGE, SELECT and INSERT on `events`, SELECT
//! on `ledgers` and EXECUTE on the shipping functions (the README lists
//! the grants). A superuser can still bypass triggers; `verify --postgres`
//! recomputes every hash and link from the columns, and looks for rows of
//! unregistered ledgers, to catch what such a hand did.

use tokio_postgres::types::Type;

use super::session::Session;
use super::{ident, ErrorKind, PgError};

/// The version this build writes.
pub const VERSION: i32 = 2;

/// Migration `i` takes a schema from version `i` to `i + 1`; `{s}` is the
/// quoted schema name.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE {s}.ledgers (
    source      text NOT NULL,
    ledger      text NOT NULL,
    anchor_seq  bigint NOT NULL CHECK (anchor_seq >= 0),
    anchor_hash text NOT NULL,
    head_seq    bigint,
    head_hash   text,
    shipper     text,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, ledger),
    CHECK ((head_seq IS NULL) = (head_hash IS NULL)),
    CHECK (head_seq IS NULL OR head_seq >= anchor_seq)
);

CREATE TABLE {s}.events (
    source       text NOT NULL,
    ledger       text NOT NULL,
    seq          bigint NOT NULL CHECK (seq >= 0),
    id           text,
    ts           text NOT NULL,
    type         text NOT NULL,
    payload      text NOT NULL,
    extra        text,
    prev_hash    text,
    hash         text NOT NULL,
    key_id       text,
    sig          text,
    file_id      text,
    file_offset  bigint,
    shipped_at   timestamptz NOT NULL DEFAULT now(),
    -- For analysts (the hash is over payload, the exact RFC 8785 text).
    -- jsonb cannot hold U+0000: such a payload has no copy.
    payload_json jsonb GENERATED ALWAYS AS
        (CASE WHEN strpos(payload, '\u0000') > 0 THEN NULL ELSE payload::jsonb END) STORED,
    PRIMARY KEY (source, ledger, seq)
);
CREATE INDEX events_id ON {s}.events (source, ledger, id) WHERE id IS NOT NULL;
CREATE INDEX events_type_ts ON {s}.events (type, ts);

CREATE FUNCTION {s}.events_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r   record;
    l   record;
    bad record;
    last_hash text;
BEGIN
    FOR r IN SELECT f.source, f.ledger, min(f.seq) AS lo, max(f.seq) AS hi, count(*) AS n
             FROM fresh f GROUP BY f.source, f.ledger LOOP
        SELECT * INTO l FROM {s}.ledgers
         WHERE source = r.source AND ledger = r.ledger FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger % of source % is not registered: rows come through ship_begin', r.ledger, r.source
                USING ERRCODE = 'LT001';
        END IF;
        IF l.head_seq IS NULL THEN
            IF r.lo <> l.anchor_seq THEN
                RAISE EXCEPTION 'ledger % of source %: the first rows start at seq %, not at the anchor (seq %)', r.ledger, r.source, r.lo, l.anchor_seq
                    USING ERRCODE = 'LT001';
            END IF;
            IF (SELECT f.hash FROM fresh f WHERE f.source = r.source AND f.ledger = r.ledger AND f.seq = r.lo)
               IS DISTINCT FROM l.anchor_hash THEN
                RAISE EXCEPTION 'ledger % of source %: the row at the anchor (seq %) does not carry the anchor''s hash', r.ledger, r.source, r.lo
                    USING ERRCODE = 'LT001';
            END IF;
        ELSE
            IF r.lo <> l.head_seq + 1 THEN
                RAISE EXCEPTION 'ledger % of source %: rows start at seq %, but the central head is seq %', r.ledger, r.source, r.lo, l.head_seq
                    USING ERRCODE = 'LT001', DETAIL = 'a row must follow the head: no gap, no overlap';
            END IF;
            IF (SELECT f.prev_hash FROM fresh f WHERE f.source = r.source AND f.ledger = r.ledger AND f.seq = r.lo)
               IS DISTINCT FROM l.head_hash THEN
                RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the central head (seq %)', r.ledger, r.source, r.lo, l.head_seq
                    USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the head''s hash: a fork';
            END IF;
        END IF;
        IF r.n <> r.hi - r.lo + 1 THEN
            RAISE EXCEPTION 'ledger % of source %: the rows of seq % to % leave a gap', r.ledger, r.source, r.lo, r.hi
                USING ERRCODE = 'LT001';
        END IF;
        -- One sort of the batch (a self-join of a transition table, which
        -- has no statistics, can be planned as a nested loop: quadratic).
        SELECT x.seq INTO bad FROM (
            SELECT f.seq, f.prev_hash IS DISTINCT FROM lag(f.hash) OVER w AS broken,
                   lag(f.seq) OVER w AS before
              FROM fresh f WHERE f.source = r.source AND f.ledger = r.ledger
            WINDOW w AS (ORDER BY f.seq)) x
         WHERE x.before IS NOT NULL AND x.broken
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the row before it', r.ledger, r.source, bad.seq
                USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the hash of seq - 1';
        END IF;
        SELECT f.hash INTO last_hash FROM fresh f
         WHERE f.source = r.source AND f.ledger = r.ledger AND f.seq = r.hi;
        UPDATE {s}.ledgers SET head_seq = r.hi, head_hash = last_hash, updated_at = now()
         WHERE source = r.source AND ledger = r.ledger;
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER events_chain AFTER INSERT ON {s}.events
    REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_chain();

CREATE FUNCTION {s}.events_immutable() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'shipped events are never changed or removed (% refused)', TG_OP
        USING ERRCODE = 'LT001';
END
$fn$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON {s}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {s}.events
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_immutable();

CREATE FUNCTION {s}.ledgers_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'a ledger of the fleet store is never removed (% refused)', TG_OP
            USING ERRCODE = 'LT001';
    END IF;
    IF NEW.source IS DISTINCT FROM OLD.source OR NEW.ledger IS DISTINCT FROM OLD.ledger
       OR NEW.anchor_seq IS DISTINCT FROM OLD.anchor_seq OR NEW.anchor_hash IS DISTINCT FROM OLD.anchor_hash THEN
        RAISE EXCEPTION 'ledger % of source %: its name and anchor never change', OLD.ledger, OLD.source
            USING ERRCODE = 'LT001';
    END IF;
    IF NEW.head_seq IS DISTINCT FROM OLD.head_seq OR NEW.head_hash IS DISTINCT FROM OLD.head_hash THEN
        IF NEW.head_seq IS NULL OR NEW.head_seq < coalesce(OLD.head_seq, -1) OR NOT EXISTS (
            SELECT 1 FROM {s}.events e WHERE e.source = NEW.source AND e.ledger = NEW.ledger
               AND e.seq = NEW.head_seq AND e.hash = NEW.head_hash) THEN
            RAISE EXCEPTION 'ledger % of source %: the head moves only forward, to a row that is there', OLD.ledger, OLD.source
                USING ERRCODE = 'LT001';
        END IF;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER ledgers_guard BEFORE UPDATE OR DELETE ON {s}.ledgers
    FOR EACH ROW EXECUTE FUNCTION {s}.ledgers_guard();
CREATE TRIGGER ledgers_no_truncate BEFORE TRUNCATE ON {s}.ledgers
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_immutable();

-- The start of every shipping transaction: registers the ledger (its
-- anchor) on its first batch, fences out any other shipper holding a live
-- lease, and checks that the central head is the one the batch follows.
CREATE FUNCTION {s}.ship_begin(
    p_source text, p_ledger text, p_shipper text, p_lease_secs integer,
    p_head_seq bigint, p_head_hash text, p_anchor_seq bigint, p_anchor_hash text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    l record;
BEGIN
    SELECT * INTO l FROM {s}.ledgers WHERE source = p_source AND ledger = p_ledger FOR UPDATE;
    IF NOT FOUND THEN
        IF p_head_seq IS NOT NULL THEN
            RAISE EXCEPTION 'ledger % of source % has no central rows, but this shipper expected head seq %', p_ledger, p_source, p_head_seq
                USING ERRCODE = 'LT003';
        END IF;
        INSERT INTO {s}.ledgers (source, ledger, anchor_seq, anchor_hash, shipper, lease_until)
        VALUES (p_source, p_ledger, p_anchor_seq, p_anchor_hash, p_shipper,
                now() + make_interval(secs => p_lease_secs));
        RETURN;
    END IF;
    IF l.shipper IS DISTINCT FROM p_shipper AND l.lease_until > now() THEN
        RAISE EXCEPTION 'ledger % of source % is being shipped by %, whose lease runs until %', p_ledger, p_source, l.shipper, l.lease_until
            USING ERRCODE = 'LT002',
                  HINT = 'two sidecars ship the same (source, ledger): give each its own source under [postgres]';
    END IF;
    IF l.head_seq IS DISTINCT FROM p_head_seq OR l.head_hash IS DISTINCT FROM p_head_hash THEN
        RAISE EXCEPTION 'ledger % of source %: the central head is seq %, not the seq % this shipper expected', p_ledger, p_source,
              coalesce(l.head_seq::text, 'none'), coalesce(p_head_seq::text, 'none')
            USING ERRCODE = 'LT003';
    END IF;
    IF l.head_seq IS NULL AND (l.anchor_seq <> p_anchor_seq OR l.anchor_hash <> p_anchor_hash) THEN
        RAISE EXCEPTION 'ledger % of source %: registered with anchor seq %, not this shipper''s seq %', p_ledger, p_source, l.anchor_seq, p_anchor_seq
            USING ERRCODE = 'LT001';
    END IF;
    UPDATE {s}.ledgers SET shipper = p_shipper, lease_until = now() + make_interval(secs => p_lease_secs)
     WHERE source = p_source AND ledger = p_ledger;
END
$fn$;

-- A clean stop gives the lease up, so that a rebuilt mirror (or the
-- sidecar's successor) need not wait for it to run out.
CREATE FUNCTION {s}.ship_end(p_source text, p_ledger text, p_shipper text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    UPDATE {s}.ledgers SET lease_until = now()
     WHERE source = p_source AND ledger = p_ledger AND shipper = p_shipper AND lease_until > now();
$fn$;

REVOKE ALL ON FUNCTION {s}.ship_begin(text, text, text, integer, bigint, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.ship_end(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.events_chain() FROM PUBLIC;
"#,
    r#"
-- Which role may ship which source (NULL: every source), kept by the
-- owner through `ledgertail setup-postgres --grant ROLE --source NAME`.
CREATE TABLE {s}.source_grants (
    role       text NOT NULL,
    source     text,
    granted_at timestamptz NOT NULL DEFAULT now(),
    note       text,
    UNIQUE (role, source)
);
CREATE UNIQUE INDEX source_grants_every ON {s}.source_grants (role) WHERE source IS NULL;

-- The transaction that holds a ledger's lease (the trigger admits rows
-- from it alone) and the role that took it.
ALTER TABLE {s}.ledgers ADD COLUMN lease_xact bigint, ADD COLUMN shipper_role text;

-- Whether the session's role may ship `p_source`: the schema's owner
-- (this function's, as SECURITY DEFINER runs as it) may ship any; another
-- role through a grant to it or to a role it is a member of.
CREATE FUNCTION {s}.may_ship(p_source text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT pg_has_role(session_user, current_user, 'MEMBER') OR EXISTS (
        SELECT 1 FROM {s}.source_grants g JOIN pg_roles r ON r.rolname = g.role
         WHERE (g.source = p_source OR g.source IS NULL)
           AND pg_has_role(session_user, r.oid, 'MEMBER'));
$fn$;

-- The chain, checked set-based over all the ledgers a statement adds
-- rows to (a group of many ledgers costs a few passes over its rows, not
-- a pass per ledger; no transition table is joined with itself, which
-- without statistics can be planned as a quadratic nested loop).
CREATE OR REPLACE FUNCTION {s}.events_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    bad record;
BEGIN
    SELECT f.source, f.ledger INTO bad FROM fresh f
     WHERE NOT EXISTS (SELECT 1 FROM {s}.ledgers l WHERE l.source = f.source AND l.ledger = f.ledger)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source % is not registered: rows come through ship_begin', bad.ledger, bad.source
            USING ERRCODE = 'LT001';
    END IF;
    -- The ledgers' rows locked in one order, then: only the transaction
    -- that took a ledger's lease (ship_begin, which checks that the role
    -- may ship its source) adds rows to it.
    PERFORM 1 FROM {s}.ledgers l
      WHERE (l.source, l.ledger) IN (SELECT f.source, f.ledger FROM fresh f)
      ORDER BY l.source, l.ledger FOR UPDATE;
    SELECT l.source, l.ledger INTO bad FROM {s}.ledgers l
     WHERE (l.source, l.ledger) IN (SELECT f.source, f.ledger FROM fresh f)
       AND l.lease_xact IS DISTINCT FROM txid_current()
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'rows of ledger % of source % go in only within a transaction that holds its lease', bad.ledger, bad.source
            USING ERRCODE = '42501',
                  HINT = 'rows come through ship_begin, by a role granted that source (ledgertail setup-postgres --grant ROLE --source SOURCE)';
    END IF;
    -- Each ledger's rows start at its head (or its anchor) and leave no gap.
    SELECT g.*, l.head_seq, l.head_hash, l.anchor_seq, l.anchor_hash INTO bad
      FROM (SELECT f.source, f.ledger, min(f.seq) AS lo, max(f.seq) AS hi, count(*) AS n,
                   (array_agg(f.hash ORDER BY f.seq))[1] AS first_hash,
                   (array_agg(f.prev_hash ORDER BY f.seq))[1] AS first_prev
              FROM fresh f GROUP BY f.source, f.ledger) g
      JOIN {s}.ledgers l ON l.source = g.source AND l.ledger = g.ledger
     WHERE (l.head_seq IS NULL AND (g.lo <> l.anchor_seq OR g.first_hash IS DISTINCT FROM l.anchor_hash))
        OR (l.head_seq IS NOT NULL AND (g.lo <> l.head_seq + 1 OR g.first_prev IS DISTINCT FROM l.head_hash))
        OR g.n <> g.hi - g.lo + 1
     ORDER BY g.source, g.ledger LIMIT 1;
    IF FOUND THEN
        IF bad.head_seq IS NULL AND bad.lo <> bad.anchor_seq THEN
            RAISE EXCEPTION 'ledger % of source %: the first rows start at seq %, not at the anchor (seq %)', bad.ledger, bad.source, bad.lo, bad.anchor_seq
                USING ERRCODE = 'LT001';
        ELSIF bad.head_seq IS NULL AND bad.first_hash IS DISTINCT FROM bad.anchor_hash THEN
            RAISE EXCEPTION 'ledger % of source %: the row at the anchor (seq %) does not carry the anchor''s hash', bad.ledger, bad.source, bad.lo
                USING ERRCODE = 'LT001';
        ELSIF bad.head_seq IS NOT NULL AND bad.lo <> bad.head_seq + 1 THEN
            RAISE EXCEPTION 'ledger % of source %: rows start at seq %, but the central head is seq %', bad.ledger, bad.source, bad.lo, bad.head_seq
                USING ERRCODE = 'LT001', DETAIL = 'a row must follow the head: no gap, no overlap';
        ELSIF bad.head_seq IS NOT NULL AND bad.first_prev IS DISTINCT FROM bad.head_hash THEN
            RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the central head (seq %)', bad.ledger, bad.source, bad.lo, bad.head_seq
                USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the head''s hash: a fork';
        ELSE
            RAISE EXCEPTION 'ledger % of source %: the rows of seq % to % leave a gap', bad.ledger, bad.source, bad.lo, bad.hi
                USING ERRCODE = 'LT001';
        END IF;
    END IF;
    -- Each row links to the one before it (one sort of the rows).
    SELECT x.source, x.ledger, x.seq INTO bad FROM (
        SELECT f.source, f.ledger, f.seq, f.prev_hash IS DISTINCT FROM lag(f.hash) OVER w AS broken,
               lag(f.seq) OVER w AS before
          FROM fresh f WINDOW w AS (PARTITION BY f.source, f.ledger ORDER BY f.seq)) x
     WHERE x.before IS NOT NULL AND x.broken
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the row before it', bad.ledger, bad.source, bad.seq
            USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the hash of seq - 1';
    END IF;
    UPDATE {s}.ledgers l SET head_seq = g.hi, head_hash = g.last_hash, updated_at = now()
      FROM (SELECT f.source, f.ledger, max(f.seq) AS hi, (array_agg(f.hash ORDER BY f.seq DESC))[1] AS last_hash
              FROM fresh f GROUP BY f.source, f.ledger) g
     WHERE l.source = g.source AND l.ledger = g.ledger;
    RETURN NULL;
END
$fn$;

-- The start of every shipping transaction, for any number of one
-- source's ledgers at once (a group's fences, or all of a sidecar's lease
-- renewals, in one statement): the role must be granted the source; each
-- ledger is registered (its anchor) on its first batch, fenced against
-- any other shipper holding a live lease, and its central head must be
-- the one the batch follows. Set-based: a few statements whatever the
-- count. Rows are locked in ledger order, so two never wait in a cycle.
CREATE FUNCTION {s}.ship_begin_many(
    p_source text, p_shipper text, p_lease_secs integer, p_ledgers text[],
    p_head_seqs bigint[], p_head_hashes text[], p_anchor_seqs bigint[], p_anchor_hashes text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    n   integer := coalesce(cardinality(p_ledgers), 0);
    bad record;
BEGIN
    IF NOT {s}.may_ship(p_source) THEN
        RAISE EXCEPTION 'role % may not ship source %', session_user, p_source
            USING ERRCODE = '42501',
                  HINT = 'the owner of the fleet store grants it: ledgertail setup-postgres --grant ROLE --source SOURCE';
    END IF;
    IF p_lease_secs IS NULL OR p_lease_secs < 1 OR p_lease_secs > 86400 THEN
        RAISE EXCEPTION 'a lease lasts 1 to 86400 seconds, not %', p_lease_secs
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(cardinality(p_head_seqs), 0) <> n OR coalesce(cardinality(p_head_hashes), 0) <> n
       OR coalesce(cardinality(p_anchor_seqs), 0) <> n OR coalesce(cardinality(p_anchor_hashes), 0) <> n THEN
        RAISE EXCEPTION 'ship_begin_many: the arrays differ in length' USING ERRCODE = '22023';
    END IF;
    -- First batches register their ledgers (one that another shipper
    -- registered meanwhile is judged below like any other).
    INSERT INTO {s}.ledgers (source, ledger, anchor_seq, anchor_hash, shipper, lease_until, lease_xact, shipper_role)
    SELECT p_source, w.ledger, w.anchor_seq, w.anchor_hash, p_shipper,
           now() + make_interval(secs => p_lease_secs), txid_current(), session_user
      FROM unnest(p_ledgers, p_head_seqs, p_anchor_seqs, p_anchor_hashes) AS w(ledger, head_seq, anchor_seq, anchor_hash)
     WHERE w.head_seq IS NULL
     ORDER BY w.ledger
    ON CONFLICT (source, ledger) DO NOTHING;
    PERFORM 1 FROM {s}.ledgers l
      WHERE l.source = p_source AND l.ledger = ANY (p_ledgers)
      ORDER BY l.ledger FOR UPDATE;
    SELECT w.ledger, w.head_seq INTO bad
      FROM unnest(p_ledgers, p_head_seqs) AS w(ledger, head_seq)
     WHERE NOT EXISTS (SELECT 1 FROM {s}.ledgers l WHERE l.source = p_source AND l.ledger = w.ledger)
     ORDER BY w.ledger LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source % has no central rows, but this shipper expected head seq %', bad.ledger, p_source, bad.head_seq
            USING ERRCODE = 'LT003';
    END IF;
    SELECT l.ledger, l.shipper, l.lease_until INTO bad FROM {s}.ledgers l
     WHERE l.source = p_source AND l.ledger = ANY (p_ledgers)
       AND l.shipper IS DISTINCT FROM p_shipper AND l.lease_until > now()
     ORDER BY l.ledger LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source % is being shipped by %, whose lease runs until %', bad.ledger, p_source, bad.shipper, bad.lease_until
            USING ERRCODE = 'LT002',
                  HINT = 'two sidecars ship the same (source, ledger): give each its own source under [postgres]';
    END IF;
    SELECT w.ledger, l.head_seq AS central, w.head_seq AS expected INTO bad
      FROM unnest(p_ledgers, p_head_seqs, p_head_hashes) AS w(ledger, head_seq, head_hash)
      JOIN {s}.ledgers l ON l.source = p_source AND l.ledger = w.ledger
     WHERE l.head_seq IS DISTINCT FROM w.head_seq OR l.head_hash IS DISTINCT FROM w.head_hash
     ORDER BY w.ledger LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source %: the central head is seq %, not the seq % this shipper expected', bad.ledger, p_source,
              coalesce(bad.central::text, 'none'), coalesce(bad.expected::text, 'none')
            USING ERRCODE = 'LT003';
    END IF;
    SELECT w.ledger, l.anchor_seq AS central, w.anchor_seq AS mine INTO bad
      FROM unnest(p_ledgers, p_anchor_seqs, p_anchor_hashes) AS w(ledger, anchor_seq, anchor_hash)
      JOIN {s}.ledgers l ON l.source = p_source AND l.ledger = w.ledger
     WHERE l.head_seq IS NULL AND (l.anchor_seq <> w.anchor_seq OR l.anchor_hash <> w.anchor_hash)
     ORDER BY w.ledger LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source %: registered with anchor seq %, not this shipper''s seq %', bad.ledger, p_source, bad.central, bad.mine
            USING ERRCODE = 'LT001';
    END IF;
    UPDATE {s}.ledgers l SET shipper = p_shipper, lease_until = now() + make_interval(secs => p_lease_secs),
           lease_xact = txid_current(), shipper_role = session_user
     WHERE l.source = p_source AND l.ledger = ANY (p_ledgers);
END
$fn$;

-- One ledger: what sidecars of the previous version call.
CREATE OR REPLACE FUNCTION {s}.ship_begin(
    p_source text, p_ledger text, p_shipper text, p_lease_secs integer,
    p_head_seq bigint, p_head_hash text, p_anchor_seq bigint, p_anchor_hash text)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT {s}.ship_begin_many(p_source, p_shipper, p_lease_secs, ARRAY[p_ledger], ARRAY[p_head_seq],
                               ARRAY[p_head_hash], ARRAY[p_anchor_seq], ARRAY[p_anchor_hash]);
$fn$;

CREATE OR REPLACE FUNCTION {s}.ship_end(p_source text, p_ledger text, p_shipper text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF NOT {s}.may_ship(p_source) THEN
        RAISE EXCEPTION 'role % may not ship source %', session_user, p_source
            USING ERRCODE = '42501';
    END IF;
    UPDATE {s}.ledgers SET lease_until = now()
     WHERE source = p_source AND ledger = p_ledger AND shipper = p_shipper AND lease_until > now();
END
$fn$;

REVOKE ALL ON FUNCTION {s}.ship_begin_many(text, text, integer, text[], bigint[], text[], bigint[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.may_ship(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.events_chain() FROM PUBLIC;

-- Roles that could ship under version 1 could ship any source: they keep
-- that (an upgrade must not stop a fleet), recorded as such, to be
-- narrowed by the owner.
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT ro.rolname
               FROM pg_proc p, aclexplode(p.proacl) a, pg_roles ro
              WHERE p.oid = '{s}.ship_begin(text, text, text, integer, bigint, text, bigint, text)'::regprocedure
                AND a.privilege_type = 'EXECUTE' AND a.grantee = ro.oid AND a.grantee <> p.proowner LOOP
        INSERT INTO {s}.source_grants (role, source, note)
        VALUES (r.rolname, NULL, 'kept from schema version 1, where every ingest role could ship any source');
        EXECUTE format('GRANT EXECUTE ON FUNCTION {s}.ship_begin_many(text, text, integer, text[], bigint[], text[], bigint[], text[]) TO %I', r.rolname);
    END LOOP;
END
$do$;
"#,
];

/// The revision of [`VERSION`] this build applies.
pub const REVISION: i32 = 3;

/// Revision `i` takes a schema of [`VERSION`] from revision `i` to
/// `i + 1`: the same tables and the same functions' signatures and
/// meaning, so a sidecar of this version ships into any revision of it.
/// `setup-postgres` applies them, and so does a sidecar whose role owns
/// the schema; one that does not ships on and says so (an older sidecar
/// of the fleet keeps shipping after a newer one revised the schema).
const REVISIONS: &[&str] = &[
    r#"
-- Revision 1: the same rules, checked with less work per ledger. At a
-- thousand ledgers per shipping transaction, a plpgsql call per updated
-- ledgers row and a pass over the new rows per rule were most of a round.
CREATE TABLE {s}.schema_revision (revision integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
GRANT SELECT ON {s}.schema_revision TO PUBLIC;

-- A ledger's row: a row-level trigger only for an update that breaks a
-- rule on its face (the WHEN clause decides that without a function
-- call), and one check per statement that every head is a row that is
-- there.
CREATE FUNCTION {s}.ledgers_refuse() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'a ledger of the fleet store is never removed (% refused)', TG_OP
            USING ERRCODE = 'LT001';
    END IF;
    IF NEW.source IS DISTINCT FROM OLD.source OR NEW.ledger IS DISTINCT FROM OLD.ledger
       OR NEW.anchor_seq IS DISTINCT FROM OLD.anchor_seq OR NEW.anchor_hash IS DISTINCT FROM OLD.anchor_hash THEN
        RAISE EXCEPTION 'ledger % of source %: its name and anchor never change', OLD.ledger, OLD.source
            USING ERRCODE = 'LT001';
    END IF;
    RAISE EXCEPTION 'ledger % of source %: the head moves only forward, to a row that is there', OLD.ledger, OLD.source
        USING ERRCODE = 'LT001';
END
$fn$;

CREATE FUNCTION {s}.ledgers_heads_there() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    bad record;
BEGIN
    SELECT n.source, n.ledger INTO bad FROM moved n
     WHERE n.head_seq IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM {s}.events e WHERE e.source = n.source AND e.ledger = n.ledger
              AND e.seq = n.head_seq AND e.hash = n.head_hash)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source %: the head moves only forward, to a row that is there', bad.ledger, bad.source
            USING ERRCODE = 'LT001';
    END IF;
    RETURN NULL;
END
$fn$;

DROP TRIGGER ledgers_guard ON {s}.ledgers;
DROP FUNCTION {s}.ledgers_guard();
CREATE TRIGGER ledgers_guard BEFORE DELETE ON {s}.ledgers
    FOR EACH ROW EXECUTE FUNCTION {s}.ledgers_refuse();
CREATE TRIGGER ledgers_fixed BEFORE UPDATE ON {s}.ledgers
    FOR EACH ROW WHEN (
        NEW.source IS DISTINCT FROM OLD.source OR NEW.ledger IS DISTINCT FROM OLD.ledger
        OR NEW.anchor_seq IS DISTINCT FROM OLD.anchor_seq OR NEW.anchor_hash IS DISTINCT FROM OLD.anchor_hash
        OR ((NEW.head_seq IS DISTINCT FROM OLD.head_seq OR NEW.head_hash IS DISTINCT FROM OLD.head_hash)
            AND (NEW.head_seq IS NULL OR NEW.head_seq <= coalesce(OLD.head_seq, -1))))
    EXECUTE FUNCTION {s}.ledgers_refuse();
CREATE TRIGGER ledgers_heads_there AFTER UPDATE ON {s}.ledgers
    REFERENCING NEW TABLE AS moved
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.ledgers_heads_there();

-- The chain: one sort of the new rows gives each ledger's first and last
-- row, its count and whether a row breaks its link; one UPDATE moves the
-- head of every ledger that keeps every rule (leased by this very
-- transaction, so its row is locked already: no other lock is taken).
-- When a ledger does not, the statement fails, and the rules are asked
-- one by one, in order, for the reason to give.
CREATE OR REPLACE FUNCTION {s}.events_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    bad record;
    groups bigint;
    moved bigint;
BEGIN
    WITH r AS (
        SELECT f.source, f.ledger, f.seq, f.hash, f.prev_hash,
               lag(f.seq) OVER w AS before_seq, lag(f.hash) OVER w AS before_hash,
               lead(f.seq) OVER w AS after_seq
          FROM fresh f WINDOW w AS (PARTITION BY f.source, f.ledger ORDER BY f.seq)),
    g AS MATERIALIZED (
        SELECT r.source, r.ledger, min(r.seq) AS lo, max(r.seq) AS hi, count(*) AS n,
               max(r.hash) FILTER (WHERE r.before_seq IS NULL) AS first_hash,
               max(r.prev_hash) FILTER (WHERE r.before_seq IS NULL) AS first_prev,
               max(r.hash) FILTER (WHERE r.after_seq IS NULL) AS last_hash,
               bool_or(r.before_seq IS NOT NULL AND r.prev_hash IS DISTINCT FROM r.before_hash) AS broken
          FROM r GROUP BY r.source, r.ledger),
    up AS (
        UPDATE {s}.ledgers l SET head_seq = g.hi, head_hash = g.last_hash, updated_at = now()
          FROM g
         WHERE l.source = g.source AND l.ledger = g.ledger
           AND l.lease_xact = txid_current()
           AND NOT g.broken AND g.n = g.hi - g.lo + 1
           AND CASE WHEN l.head_seq IS NULL THEN g.lo = l.anchor_seq AND g.first_hash = l.anchor_hash
                    ELSE g.lo = l.head_seq + 1 AND g.first_prev = l.head_hash END
        RETURNING 1)
    SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM up) INTO groups, moved;
    IF moved = groups THEN
        RETURN NULL;
    END IF;
    SELECT f.source, f.ledger INTO bad FROM fresh f
     WHERE NOT EXISTS (SELECT 1 FROM {s}.ledgers l WHERE l.source = f.source AND l.ledger = f.ledger)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source % is not registered: rows come through ship_begin', bad.ledger, bad.source
            USING ERRCODE = 'LT001';
    END IF;
    SELECT l.source, l.ledger INTO bad FROM {s}.ledgers l
     WHERE (l.source, l.ledger) IN (SELECT f.source, f.ledger FROM fresh f)
       AND l.lease_xact IS DISTINCT FROM txid_current()
     ORDER BY l.source, l.ledger LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'rows of ledger % of source % go in only within a transaction that holds its lease', bad.ledger, bad.source
            USING ERRCODE = '42501',
                  HINT = 'rows come through ship_begin, by a role granted that source (ledgertail setup-postgres --grant ROLE --source SOURCE)';
    END IF;
    SELECT g.*, l.head_seq, l.head_hash, l.anchor_seq, l.anchor_hash INTO bad
      FROM (SELECT f.source, f.ledger, min(f.seq) AS lo, max(f.seq) AS hi, count(*) AS n,
                   (array_agg(f.hash ORDER BY f.seq))[1] AS first_hash,
                   (array_agg(f.prev_hash ORDER BY f.seq))[1] AS first_prev
              FROM fresh f GROUP BY f.source, f.ledger) g
      JOIN {s}.ledgers l ON l.source = g.source AND l.ledger = g.ledger
     WHERE (l.head_seq IS NULL AND (g.lo <> l.anchor_seq OR g.first_hash IS DISTINCT FROM l.anchor_hash))
        OR (l.head_seq IS NOT NULL AND (g.lo <> l.head_seq + 1 OR g.first_prev IS DISTINCT FROM l.head_hash))
        OR g.n <> g.hi - g.lo + 1
     ORDER BY g.source, g.ledger LIMIT 1;
    IF FOUND THEN
        IF bad.head_seq IS NULL AND bad.lo <> bad.anchor_seq THEN
            RAISE EXCEPTION 'ledger % of source %: the first rows start at seq %, not at the anchor (seq %)', bad.ledger, bad.source, bad.lo, bad.anchor_seq
                USING ERRCODE = 'LT001';
        ELSIF bad.head_seq IS NULL AND bad.first_hash IS DISTINCT FROM bad.anchor_hash THEN
            RAISE EXCEPTION 'ledger % of source %: the row at the anchor (seq %) does not carry the anchor''s hash', bad.ledger, bad.source, bad.lo
                USING ERRCODE = 'LT001';
        ELSIF bad.head_seq IS NOT NULL AND bad.lo <> bad.head_seq + 1 THEN
            RAISE EXCEPTION 'ledger % of source %: rows start at seq %, but the central head is seq %', bad.ledger, bad.source, bad.lo, bad.head_seq
                USING ERRCODE = 'LT001', DETAIL = 'a row must follow the head: no gap, no overlap';
        ELSIF bad.head_seq IS NOT NULL AND bad.first_prev IS DISTINCT FROM bad.head_hash THEN
            RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the central head (seq %)', bad.ledger, bad.source, bad.lo, bad.head_seq
                USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the head''s hash: a fork';
        ELSE
            RAISE EXCEPTION 'ledger % of source %: the rows of seq % to % leave a gap', bad.ledger, bad.source, bad.lo, bad.hi
                USING ERRCODE = 'LT001';
        END IF;
    END IF;
    SELECT x.source, x.ledger, x.seq INTO bad FROM (
        SELECT f.source, f.ledger, f.seq, f.prev_hash IS DISTINCT FROM lag(f.hash) OVER w AS broken,
               lag(f.seq) OVER w AS before
          FROM fresh f WINDOW w AS (PARTITION BY f.source, f.ledger ORDER BY f.seq)) x
     WHERE x.before IS NOT NULL AND x.broken
     ORDER BY x.source, x.ledger, x.seq LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger % of source %: the row at seq % does not link to the row before it', bad.ledger, bad.source, bad.seq
            USING ERRCODE = 'LT001', DETAIL = 'its prev_hash is not the hash of seq - 1';
    END IF;
    RAISE EXCEPTION 'the chain check refused these rows without finding which rule they break'
        USING ERRCODE = 'LT001';
END
$fn$;

REVOKE ALL ON FUNCTION {s}.ledgers_refuse() FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.ledgers_heads_there() FROM PUBLIC;

-- The start of a shipping transaction, the same rules, with each
-- ledger's row found by its key: one probe per ledger, in ledger order,
-- whatever the planner's statistics say (a thousand ledgers registered
-- since the last ANALYZE made it join every ledger with every other),
-- the rows locked and read in one pass, and the leases taken by those
-- rows' addresses.
CREATE OR REPLACE FUNCTION {s}.ship_begin_many(
    p_source text, p_shipper text, p_lease_secs integer, p_ledgers text[],
    p_head_seqs bigint[], p_head_hashes text[], p_anchor_seqs bigint[], p_anchor_hashes text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    n        integer := coalesce(cardinality(p_ledgers), 0);
    held     tid[];
    missing  text;
    fenced   text;
    moved    text;
    anchored text;
    at       integer;
    bad      record;
BEGIN
    IF NOT {s}.may_ship(p_source) THEN
        RAISE EXCEPTION 'role % may not ship source %', session_user, p_source
            USING ERRCODE = '42501',
                  HINT = 'the owner of the fleet store grants it: ledgertail setup-postgres --grant ROLE --source SOURCE';
    END IF;
    IF p_lease_secs IS NULL OR p_lease_secs < 1 OR p_lease_secs > 86400 THEN
        RAISE EXCEPTION 'a lease lasts 1 to 86400 seconds, not %', p_lease_secs
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(cardinality(p_head_seqs), 0) <> n OR coalesce(cardinality(p_head_hashes), 0) <> n
       OR coalesce(cardinality(p_anchor_seqs), 0) <> n OR coalesce(cardinality(p_anchor_hashes), 0) <> n THEN
        RAISE EXCEPTION 'ship_begin_many: the arrays differ in length' USING ERRCODE = '22023';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    -- First batches register their ledgers (one that another shipper
    -- registered meanwhile is judged below like any other).
    INSERT INTO {s}.ledgers (source, ledger, anchor_seq, anchor_hash, shipper, lease_until, lease_xact, shipper_role)
    SELECT p_source, w.ledger, w.anchor_seq, w.anchor_hash, p_shipper,
           now() + make_interval(secs => p_lease_secs), txid_current(), session_user
      FROM unnest(p_ledgers, p_head_seqs, p_anchor_seqs, p_anchor_hashes) AS w(ledger, head_seq, anchor_seq, anchor_hash)
     WHERE w.head_seq IS NULL
     ORDER BY w.ledger
    ON CONFLICT (source, ledger) DO NOTHING;
    WITH w AS MATERIALIZED (
        SELECT x.* FROM unnest(p_ledgers, p_head_seqs, p_head_hashes, p_anchor_seqs, p_anchor_hashes)
               AS x(ledger, head_seq, head_hash, anchor_seq, anchor_hash)
         ORDER BY x.ledger OFFSET 0),
    j AS MATERIALIZED (
        SELECT w.*, c.* FROM w LEFT JOIN LATERAL (
               SELECT l.ctid AS c_at, l.head_seq AS c_head_seq, l.head_hash AS c_head_hash,
                      l.anchor_seq AS c_anchor_seq, l.anchor_hash AS c_anchor_hash,
                      l.shipper AS c_shipper, l.lease_until AS c_lease_until
                 FROM {s}.ledgers l WHERE l.source = p_source AND l.ledger = w.ledger
                LIMIT 1 FOR UPDATE) c ON true)
    SELECT (SELECT array_agg(j.c_at) FROM j WHERE j.c_at IS NOT NULL),
           (SELECT j.ledger FROM j WHERE j.c_at IS NULL ORDER BY j.ledger LIMIT 1),
           (SELECT j.ledger FROM j WHERE j.c_shipper IS DISTINCT FROM p_shipper AND j.c_lease_until > now()
             ORDER BY j.ledger LIMIT 1),
           (SELECT j.ledger FROM j WHERE j.c_at IS NOT NULL
               AND (j.c_head_seq IS DISTINCT FROM j.head_seq OR j.c_head_hash IS DISTINCT FROM j.head_hash)
             ORDER BY j.ledger LIMIT 1),
           (SELECT j.ledger FROM j WHERE j.c_head_seq IS NULL
               AND (j.c_anchor_seq <> j.anchor_seq OR j.c_anchor_hash <> j.anchor_hash)
             ORDER BY j.ledger LIMIT 1)
      INTO held, missing, fenced, moved, anchored;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'ledger % of source % has no central rows, but this shipper expected head seq %', missing, p_source,
              p_head_seqs[array_position(p_ledgers, missing)]
            USING ERRCODE = 'LT003';
    END IF;
    IF fenced IS NOT NULL THEN
        SELECT l.shipper, l.lease_until INTO bad FROM {s}.ledgers l WHERE l.source = p_source AND l.ledger = fenced;
        RAISE EXCEPTION 'ledger % of source % is being shipped by %, whose lease runs until %', fenced, p_source, bad.shipper, bad.lease_until
            USING ERRCODE = 'LT002',
                  HINT = 'two sidecars ship the same (source, ledger): give each its own source under [postgres]';
    END IF;
    IF moved IS NOT NULL THEN
        at := array_position(p_ledgers, moved);
        SELECT l.head_seq INTO bad FROM {s}.ledgers l WHERE l.source = p_source AND l.ledger = moved;
        RAISE EXCEPTION 'ledger % of source %: the central head is seq %, not the seq % this shipper expected', moved, p_source,
              coalesce(bad.head_seq::text, 'none'), coalesce(p_head_seqs[at]::text, 'none')
            USING ERRCODE = 'LT003';
    END IF;
    IF anchored IS NOT NULL THEN
        at := array_position(p_ledgers, anchored);
        SELECT l.anchor_seq INTO bad FROM {s}.ledgers l WHERE l.source = p_source AND l.ledger = anchored;
        RAISE EXCEPTION 'ledger % of source %: registered with anchor seq %, not this shipper''s seq %', anchored, p_source, bad.anchor_seq, p_anchor_seqs[at]
            USING ERRCODE = 'LT001';
    END IF;
    UPDATE {s}.ledgers l SET shipper = p_shipper, lease_until = now() + make_interval(secs => p_lease_secs),
           lease_xact = txid_current(), shipper_role = session_user
     WHERE l.ctid = ANY (held);
END
$fn$;
"#,
    r#"
-- Revision 2: analysts read each payload as jsonb through the view
-- events_json, which reads the table's stored copy where it has one (as
-- every store before this revision does) and parses payload otherwise
-- (setup-postgres --payload-json chooses; a new store has no copy).
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{s}.events'::regclass
                  AND attname = 'payload_json' AND NOT attisdropped) THEN
        CREATE VIEW {s}.events_json AS
            SELECT source, ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig,
                   file_id, file_offset, shipped_at, payload_json
              FROM {s}.events;
    ELSE
        CREATE VIEW {s}.events_json AS
            SELECT source, ledger, seq, id, ts, type, payload, extra, prev_hash, hash, key_id, sig,
                   file_id, file_offset, shipped_at,
                   CASE WHEN strpos(payload, '\u0000') > 0 THEN NULL ELSE payload::jsonb END AS payload_json
              FROM {s}.events;
    END IF;
END
$do$;
"#,
    r#"
-- Revision 3: less planning per shipping transaction (measured with
-- pg_stat_user_functions, one ledger at 2,000 events/s: ship_begin_many
-- 1.26 ms a call, then 0.58). may_ship, a SQL function that cannot be
-- inlined (SECURITY DEFINER), was planned anew at every call, 0.42 ms;
-- as plpgsql its plan is kept for the session (0.06 ms). The statements
-- of ship_begin_many take arrays, for which the plan cache kept making
-- a custom plan at every call; the generic plan probes the same keys.
CREATE OR REPLACE FUNCTION {s}.may_ship(p_source text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN pg_has_role(session_user, current_user, 'MEMBER') OR EXISTS (
        SELECT 1 FROM {s}.source_grants g JOIN pg_roles r ON r.rolname = g.role
         WHERE (g.source = p_source OR g.source IS NULL)
           AND pg_has_role(session_user, r.oid, 'MEMBER'));
END
$fn$;
ALTER FUNCTION {s}.ship_begin_many(text, text, integer, text[], bigint[], text[], bigint[], text[])
    SET plan_cache_mode = force_generic_plan;
"#,
];

/// The grants an ingest role needs, nothing more (`{s}`: the schema,
/// `{r}`: the role): the README prints the same. Which sources the role
/// may ship is kept apart, in `source_grants` ([`grant_ingest`]).
pub const INGEST_GRANTS: &str = "GRANT USAGE ON SCHEMA {s} TO {r};
GRANT SELECT, INSERT ON {s}.events TO {r};
GRANT SELECT ON {s}.ledgers, {s}.schema_version TO {r};
GRANT EXECUTE ON FUNCTION {s}.ship_begin(text, text, text, integer, bigint, text, bigint, text) TO {r};
GRANT EXECUTE ON FUNCTION {s}.ship_begin_many(text, text, integer, text[], bigint[], text[], bigint[], text[]) TO {r};
GRANT EXECUTE ON FUNCTION {s}.ship_end(text, text, text) TO {r};";

/// Which sources a role may ship.
#[derive(Debug, Clone, Copy)]
pub enum Sources<'a> {
    /// Only these (one role per host: the safe default).
    Only(&'a [String]),
    /// Every source, present and future (`--all-sources`).
    All,
}

/// The grants for `role` on `schema`, as SQL an owner can run by hand
/// (`setup-postgres --print`).
pub fn ingest_grants(schema: &str, role: &str, sources: Sources<'_>) -> String {
    let mut sql = INGEST_GRANTS
        .replace("{s}", &ident(schema))
        .replace("{r}", &ident(role));
    let rows: Vec<Option<&str>> = match sources {
        Sources::Only(names) => names.iter().map(|n| Some(n.as_str())).collect(),
        Sources::All => vec![None],
    };
    for source in rows {
        sql.push_str(&format!(
            "\nINSERT INTO {}.source_grants (role, source) VALUES ({}, {}) ON CONFLICT DO NOTHING;",
            ident(schema),
            printed_literal(role),
            source.map_or("NULL".to_owned(), printed_literal),
        ));
    }
    sql
}

/// A string literal for SQL printed for a person to run, read the same
/// whatever the server's `standard_conforming_strings` (an `E''` literal
/// with its backslashes doubled when it has any).
fn printed_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Grants `role` the ingest privileges on `schema` and the right to ship
/// `sources` (as the schema's owner), in one transaction.
pub fn grant_ingest(
    session: &Session,
    schema: &str,
    role: &str,
    sources: Sources<'_>,
) -> Result<(), PgError> {
    let grants = INGEST_GRANTS
        .replace("{s}", &ident(schema))
        .replace("{r}", &ident(role));
    let record = format!(
        "INSERT INTO {}.source_grants (role, source) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        ident(schema)
    );
    in_transaction(session, || {
        session.execute_fixed("granting the ingest privileges", &grants)?;
        let names: Vec<Option<&str>> = match sources {
            Sources::Only(names) => names.iter().map(|n| Some(n.as_str())).collect(),
            Sources::All => vec![None],
        };
        for source in names {
            session.query(
                "recording a source grant",
                &record,
                &[(&role, Type::TEXT), (&source, Type::TEXT)],
            )?;
        }
        Ok(())
    })
}

/// One row of `source_grants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceGrant {
    pub role: String,
    /// `None`: every source.
    pub source: Option<String>,
    pub note: Option<String>,
}

/// The sources each role may ship, sorted.
pub fn source_grants(session: &Session, schema: &str) -> Result<Vec<SourceGrant>, PgError> {
    let sql = format!(
        "SELECT role, source, note FROM {}.source_grants ORDER BY role, source NULLS FIRST",
        ident(schema)
    );
    Ok(session
        .query("reading the source grants", &sql, &[])?
        .iter()
        .map(|r| SourceGrant {
            role: r.try_get(0).unwrap_or_default(),
            source: r.try_get(1).ok().flatten(),
            note: r.try_get(2).ok().flatten(),
        })
        .collect())
}

/// Runs `work` in a transaction: committed when it succeeds, rolled back
/// when it fails.
pub(super) fn in_transaction<T>(
    session: &Session,
    work: impl FnOnce() -> Result<T, PgError>,
) -> Result<T, PgError> {
    session.execute_fixed("beginning a transaction", "BEGIN")?;
    match work() {
        Ok(v) => {
            session.execute_fixed("committing", "COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            if !session.is_closed() {
                let _ = session.execute_fixed("rolling back", "ROLLBACK");
            }
            Err(e)
        }
    }
}

/// Makes sure `schema` is at [`VERSION`]: creates or migrates it when it
/// is older (under a transaction-scoped advisory lock, so that a fleet
/// starting at once migrates it once), refuses a newer one.
pub fn ensure(session: &Session, schema: &str) -> Result<(), PgError> {
    let fresh = current(session, schema)?.is_none();
    if ensure_version(session, schema, VERSION)? != VERSION {
        return Ok(()); // a newer version that still takes this build's rows
    }
    revise(session, schema)?;
    lean_if_fresh(fresh, session, schema)
}

/// A store this build created keeps no stored `jsonb` copy of each
/// payload and no index by `(type, ts)`: the frozen migrations create
/// both, and they go before any row. Each was a large share of a central
/// row's cost (docs/performance.md); the docs give the statement that
/// brings the index back, and `setup-postgres --payload-json stored` the
/// copy. A store made by an earlier build keeps what it has.
fn lean_if_fresh(fresh: bool, session: &Session, schema: &str) -> Result<(), PgError> {
    if fresh {
        super::payload_json::set(session, schema, super::payload_json::PayloadJson::Computed)?;
        let sql = format!("DROP INDEX IF EXISTS {}.events_type_ts", ident(schema));
        session.execute_fixed("dropping the index by (type, ts) of a new store", &sql)?;
    }
    Ok(())
}

/// [`ensure`] for a sidecar about to ship: a revision its role may not
/// apply (it does not own the schema) is logged with a hint, and
/// shipping goes on at the schema's revision.
pub fn ensure_for_shipping(session: &Session, schema: &str) -> Result<(), PgError> {
    let fresh = current(session, schema)?.is_none();
    if ensure_version(session, schema, VERSION)? != VERSION {
        return Ok(());
    }
    match revise(session, schema).and_then(|()| lean_if_fresh(fresh, session, schema)) {
        Err(e) if !matches!(e.kind, ErrorKind::Unreachable | ErrorKind::Unknown) => {
            tracing::warn!(
                schema,
                error = %e,
                hint = "run ledgertail setup-postgres as the schema's owner (it applies the revision in place; shipping goes on meanwhile)",
                "fleet: the central schema lacks this build's revision {REVISION} (cheaper checks, the view events_json) and this role cannot apply it"
            );
            Ok(())
        }
        other => other,
    }
}

/// Applies the revisions of [`VERSION`] the schema lacks (under the
/// schema lock, as a migration).
fn revise(session: &Session, schema: &str) -> Result<(), PgError> {
    if revision(session, schema)? >= REVISION {
        return Ok(());
    }
    let s = ident(schema);
    let from = in_transaction(session, || {
        lock_schema(session, schema)?;
        let from = revision(session, schema)?;
        for (i, step) in REVISIONS
            .iter()
            .enumerate()
            .take(REVISION as usize)
            .skip(from.max(0) as usize)
        {
            let sql = format!(
                "SET LOCAL standard_conforming_strings = on;\n{}\nINSERT INTO {s}.schema_revision (revision) VALUES ({});",
                step.replace("{s}", &s),
                i + 1
            );
            session.execute_fixed("revising the central schema", &sql)?;
        }
        Ok(from)
    })?;
    if from < REVISION {
        tracing::info!(
            schema,
            version = VERSION,
            revision = REVISION,
            from,
            "central schema revised"
        );
    }
    Ok(())
}

/// The schema's revision of its version (0: none applied).
fn revision(session: &Session, schema: &str) -> Result<i32, PgError> {
    let largest = largest(session, schema, "schema_revision", "revision")?;
    Ok(largest.flatten().unwrap_or(0))
}

/// The transaction-scoped lock under which a schema is created, migrated
/// or revised (a fleet starting at once does it once).
pub(super) fn lock_schema(session: &Session, schema: &str) -> Result<(), PgError> {
    let lock = format!("ledgertail schema {schema}");
    session
        .query(
            "waiting for the schema lock",
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[(&lock, Type::TEXT)],
        )
        .map(|_| ())
}

/// [`ensure`] up to `version` only: for tests that need a schema as an
/// older build left it.
#[doc(hidden)]
pub fn ensure_at(session: &Session, schema: &str, version: i32) -> Result<(), PgError> {
    ensure_version(session, schema, version).map(|_| ())
}

/// [`ensure_at`]: the schema's version once done (`version`, or a newer
/// one that still takes this build's rows).
fn ensure_version(session: &Session, schema: &str, version: i32) -> Result<i32, PgError> {
    match current(session, schema)? {
        Some(v) if v == version => return Ok(v),
        Some(v) if v > VERSION && ships_into(session, schema)? => return Ok(v),
        _ => {}
    }
    let from = in_transaction(session, || migrate(session, schema, version))?;
    if let Some(from) = from {
        tracing::info!(schema, version, from, "central schema created or migrated");
        if from == 1 && version >= 2 {
            warn_every_source(session, schema);
        }
    }
    Ok(current(session, schema)?.unwrap_or(version))
}

/// Whether a schema of a newer version still takes the rows of sidecars
/// of this one: the newer build's migrations changed nothing they rely on
/// and said so in `schema_sidecars` (the oldest version whose sidecars
/// still ship into it; readable by every role). Without that table, or
/// unreadable, a newer schema is refused.
fn ships_into(session: &Session, schema: &str) -> Result<bool, PgError> {
    let from = match largest(session, schema, "schema_sidecars", "from_version") {
        Ok(from) => from.flatten(),
        Err(e) if e.kind == ErrorKind::Privilege => None,
        Err(e) => return Err(e),
    };
    Ok(from.is_some_and(|f| f <= VERSION))
}

/// Inside the migration's transaction: the version it migrated from,
/// `None` when another sidecar had just done it.
fn migrate(session: &Session, schema: &str, version: i32) -> Result<Option<i32>, PgError> {
    let s = ident(schema);
    lock_schema(session, schema)?;
    let from = match current(session, schema)? {
        Some(v) if v == version => return Ok(None),
        Some(v) if v > VERSION && ships_into(session, schema)? => return Ok(None),
        Some(v) if v > VERSION => {
            return Err(PgError::new(
                ErrorKind::Schema,
                format!("the central schema {schema} is at version {v}, newer than this build's {VERSION}"),
            )
            .with_hint("upgrade ledgertail on this host (a newer sidecar migrated the fleet store)"));
        }
        Some(v) if v < 1 => {
            return Err(PgError::new(
                ErrorKind::Schema,
                format!("the central schema {schema} records version {v}, which no build wrote"),
            ));
        }
        Some(v) => v,
        None => {
            session.execute_fixed(
                "creating the central schema",
                &format!(
                    "SET LOCAL standard_conforming_strings = on;
                     CREATE SCHEMA IF NOT EXISTS {s};
                     CREATE TABLE {s}.schema_version (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
                ),
            )?;
            0
        }
    };
    for (i, step) in MIGRATIONS
        .iter()
        .enumerate()
        .take(version as usize)
        .skip(from as usize)
    {
        let sql = format!(
            "SET LOCAL standard_conforming_strings = on;\n{}\nINSERT INTO {s}.schema_version (version) VALUES ({});",
            step.replace("{s}", &s),
            i + 1
        );
        session.execute_fixed("migrating the central schema", &sql)?;
    }
    Ok(Some(from))
}

/// After a migration from version 1: the roles that kept the right to
/// ship every source, named so that an operator narrows them.
fn warn_every_source(session: &Session, schema: &str) {
    let Ok(grants) = source_grants(session, schema) else {
        return;
    };
    for g in grants.iter().filter(|g| g.source.is_none()) {
        tracing::warn!(
            schema,
            role = %g.role,
            hint = "give each host its own role, then: ledgertail setup-postgres --grant ROLE --source SOURCE, and delete this role's row (source NULL) from source_grants",
            "fleet: this role may ship every source (kept from the previous schema version): one stolen credential of it can write any host's history"
        );
    }
}

/// The schema's version, `None` when it has no version table.
/// What `ledgertail check` learns from the fleet store, changing nothing.
#[derive(Debug)]
pub struct Probe {
    /// The central schema's version (`None`: not created yet).
    pub version: Option<i32>,
    /// A version newer than this build's still takes its rows.
    pub newer_takes_rows: bool,
    /// Whether this session's role may ship the source: `None` when the
    /// schema is not there to ask.
    pub may_ship: Option<Result<(), PgError>>,
}

/// The schema's version, and whether this session's role may ship
/// `source`: `ship_begin_many` on no ledger, which checks the grant and
/// the privilege first, in a transaction that is rolled back.
pub fn probe(session: &Session, schema: &str, source: &str) -> Result<Probe, PgError> {
    let version = current(session, schema)?;
    let newer_takes_rows = match version {
        Some(v) if v > VERSION => ships_into(session, schema)?,
        _ => false,
    };
    if version.is_none_or(|v| v < 2) {
        return Ok(Probe {
            version,
            newer_takes_rows,
            may_ship: None,
        });
    }
    let sql = format!(
        "SELECT {}.ship_begin_many($1::text, $2::text, 60, '{{}}'::text[], '{{}}'::int8[], '{{}}'::text[], '{{}}'::int8[], '{{}}'::text[])",
        ident(schema)
    );
    session.execute_fixed("beginning a transaction", "BEGIN")?;
    let asked = session
        .query(
            "asking whether this role may ship the source",
            &sql,
            &[(&source, Type::TEXT), (&"ledgertail check", Type::TEXT)],
        )
        .map(|_| ());
    if !session.is_closed() {
        session.execute_fixed("rolling back", "ROLLBACK")?;
    }
    Ok(Probe {
        version,
        newer_takes_rows,
        may_ship: Some(asked),
    })
}

/// The largest `column` of the bookkeeping table `name` of `schema`:
/// `None` when the table is not there, `Some(None)` when it is empty.
fn largest(
    session: &Session,
    schema: &str,
    name: &str,
    column: &str,
) -> Result<Option<Option<i32>>, PgError> {
    let table = format!("{}.{name}", ident(schema));
    let what = format!("reading the central schema's {name}");
    let exists = session.query(
        &what,
        "SELECT to_regclass($1) IS NOT NULL",
        &[(&table, Type::TEXT)],
    )?;
    if !exists
        .first()
        .is_some_and(|r| r.try_get::<_, bool>(0).unwrap_or(false))
    {
        return Ok(None);
    }
    let rows = session.query(&what, &format!("SELECT max({column}) FROM {table}"), &[])?;
    Ok(Some(rows.first().and_then(|r| {
        r.try_get::<_, Option<i32>>(0).ok().flatten()
    })))
}

fn current(session: &Session, schema: &str) -> Result<Option<i32>, PgError> {
    let largest = largest(session, schema, "schema_version", "version")?;
    Ok(largest.map(|v| v.unwrap_or(0)))
}
