//! The central schema (contract §6): `events` and `ledgers`, created when
//! missing and migrated in order like the SQLite mirror's, and the
//! triggers through which the database itself keeps the chain whoever
//! writes to it.
//!
//! - `events_chain` (after each INSERT statement, over its new rows as a
//!   transition table, so a batch costs one set-based check, not one per
//!   row): the rows of each ledger must start right after its head (or at
//!   its anchor, with the anchor's hash), leave no gap, and each link to
//!   the one before; it then moves the head to the last row. So the head
//!   always names the last row, and rows inserted any other way than the
//!   shipper's are held to the same chain.
//! - `events_immutable`: UPDATE, DELETE and TRUNCATE of events are refused.
//! - `ledgers_guard`: a ledger's anchor never changes, its head only moves
//!   forward and only to a row that is there, and it is never deleted.
//! - `ship_begin`: the fence and the expected head, checked at the start
//!   of every shipping transaction under the ledger row's lock.
//!
//! The functions are SECURITY DEFINER (owned by the schema's owner), so
//! an ingest role needs only USAGE, SELECT and INSERT on `events`, SELECT
//! on `ledgers` and EXECUTE on `ship_begin` and `ship_end` (the README lists the grants).
//! A superuser can still bypass triggers; `verify --postgres` recomputes
//! every hash and link from the columns to catch what such a hand did.

use super::{ident, ErrorKind, PgError};

/// The version this build writes.
pub const VERSION: i32 = 1;

/// Migration `i` takes a schema from version `i` to `i + 1`; `{s}` is the
/// quoted schema name.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

/// The grants an ingest role needs, nothing more (`{s}`: the schema,
/// `{r}`: the role): the README prints the same.
pub const INGEST_GRANTS: &str = "GRANT USAGE ON SCHEMA {s} TO {r};
GRANT SELECT, INSERT ON {s}.events TO {r};
GRANT SELECT ON {s}.ledgers, {s}.schema_version TO {r};
GRANT EXECUTE ON FUNCTION {s}.ship_begin(text, text, text, integer, bigint, text, bigint, text) TO {r};
GRANT EXECUTE ON FUNCTION {s}.ship_end(text, text, text) TO {r};";

/// The grants for `role` on `schema`, as SQL.
pub fn ingest_grants(schema: &str, role: &str) -> String {
    INGEST_GRANTS
        .replace("{s}", &ident(schema))
        .replace("{r}", &ident(role))
}

/// Grants `role` the ingest privileges on `schema` (as the schema's
/// owner).
pub fn grant_ingest(
    client: &mut postgres::Client,
    schema: &str,
    role: &str,
) -> Result<(), PgError> {
    client
        .batch_execute(&format!("BEGIN;{}COMMIT;", ingest_grants(schema, role)))
        .map_err(|e| {
            let err = PgError::from_query(e);
            let _ = client.batch_execute("ROLLBACK");
            err
        })
}

/// Makes sure `schema` is at [`VERSION`]: creates or migrates it when it
/// is older (under a transaction-scoped advisory lock, so that a fleet
/// starting at once migrates it once), refuses a newer one.
pub fn ensure(client: &mut postgres::Client, schema: &str) -> Result<(), PgError> {
    if current(client, schema)? == Some(VERSION) {
        return Ok(());
    }
    let s = ident(schema);
    let mut tx = client.transaction().map_err(PgError::from_query)?;
    let mut lock = String::from("SELECT pg_advisory_xact_lock(hashtext(");
    super::literal(&mut lock, &format!("ledgertail schema {schema}"));
    lock.push_str("))");
    tx.batch_execute(&lock).map_err(PgError::from_query)?;
    let found = current_in(&mut tx, schema)?;
    let from = match found {
        Some(v) if v == VERSION => return Ok(()),
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
            tx.batch_execute(&format!(
                "SET LOCAL standard_conforming_strings = on;
                 CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE {s}.schema_version (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
            ))
            .map_err(PgError::from_query)?;
            0
        }
    };
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let sql = format!(
            "SET LOCAL standard_conforming_strings = on;\n{}\nINSERT INTO {s}.schema_version (version) VALUES ({});",
            step.replace("{s}", &s),
            i + 1
        );
        tx.batch_execute(&sql).map_err(PgError::from_query)?;
    }
    tx.commit().map_err(PgError::from_query)?;
    tracing::info!(
        schema,
        version = VERSION,
        from,
        "central schema created or migrated"
    );
    Ok(())
}

/// The schema's version, `None` when it has no version table.
fn current(client: &mut postgres::Client, schema: &str) -> Result<Option<i32>, PgError> {
    let mut tx = client.transaction().map_err(PgError::from_query)?;
    let v = current_in(&mut tx, schema)?;
    tx.commit().map_err(PgError::from_query)?;
    Ok(v)
}

fn current_in(tx: &mut postgres::Transaction<'_>, schema: &str) -> Result<Option<i32>, PgError> {
    let mut probe = String::from("SELECT to_regclass(");
    super::literal(&mut probe, &format!("{}.schema_version", ident(schema)));
    probe.push_str(") IS NOT NULL");
    let exists = first_value(tx.simple_query(&probe).map_err(PgError::from_query)?);
    if exists.as_deref() != Some("t") {
        return Ok(None);
    }
    let v = first_value(
        tx.simple_query(&format!(
            "SELECT max(version) FROM {}.schema_version",
            ident(schema)
        ))
        .map_err(PgError::from_query)?,
    );
    Ok(Some(v.and_then(|v| v.parse().ok()).unwrap_or(0)))
}

/// The first column of the first row of a simple query's answer.
pub(super) fn first_value(messages: Vec<postgres::SimpleQueryMessage>) -> Option<String> {
    messages.into_iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}
