//! The checkpoint publisher of `run` (contract §7): a thread that, every
//! `checkpoint_interval`, signs a checkpoint of each ledger whose tree
//! grew, offers it to every `[[tlog.witness]]` with a consistency proof
//! from the size that witness last cosigned, keeps the verified
//! cosignatures in the mirror, and hands the latest checkpoint with its
//! cosignatures to `GET /tlog/<ledger>/checkpoint`. A refusal (the signer's
//! or a witness's) is logged, counted and written to the mirror's `meta`
//! for `status`; it never stops the mirroring. A round in which nothing
//! was committed and nothing is left to retry is a single pragma.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::witness::{Answer, WitnessClient};
use super::{latest_with_cosignatures, Signer, TlogError};
use crate::config::{LedgerSettings, TlogSettings};
use crate::ledger::tlog::{AddCheckpoint, SignedCheckpoint};
use crate::mirror::{Access, Mirror, StoredCosignature};
use crate::telemetry::{Telemetry, TlogMetrics, WitnessMetrics};

/// The latest checkpoint of each ledger, with its cosignatures, as served.
pub type Served = Arc<RwLock<BTreeMap<String, String>>>;

/// The `meta` key under which the last refusal of a witness is kept.
pub fn witness_error_key(ledger: &str, witness: &str) -> String {
    format!("tlog_witness_error:{ledger}:{witness}")
}

/// The `meta` key of the signer's last refusal for a ledger.
pub fn sign_error_key(ledger: &str) -> String {
    format!("tlog_sign_error:{ledger}")
}

pub struct Publisher {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

struct Ledger {
    settings: LedgerSettings,
    metrics: TlogMetrics,
    witnesses: Vec<(WitnessClient, WitnessMetrics)>,
    /// The size a witness said it holds (409), by witness name.
    witness_holds: HashMap<String, u64>,
    last_error: Option<String>,
    /// The tree size at which everything was done: signed, and cosigned
    /// by every witness (`None`: something is left to do or to retry).
    done_at: Option<u64>,
    /// Whether a checkpoint signed by this process was logged at info:
    /// only the first is, the rest at debug (a healthy log is quiet).
    announced: bool,
}

struct Work {
    signer: Signer,
    mirror: Mirror,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    ledgers: Vec<Ledger>,
    served: Served,
    /// The mirror's `data_version` when the last full round began.
    seen_version: Option<i64>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn note_meta(mirror: &Mirror, key: &str, value: &str) {
    if mirror.meta(key).ok().flatten().as_deref().unwrap_or("") != value {
        let _ = mirror.set_meta(key, value);
    }
}

impl Work {
    /// One round over the ledgers. When nothing was committed to the
    /// mirror since the last round and every ledger was done, there is
    /// nothing to sign or to offer: the round is one pragma, whatever the
    /// number of ledgers (a thousand idle ledgers cost no query each).
    fn round(&mut self) {
        let version = self.mirror.data_version().ok();
        if version.is_some()
            && version == self.seen_version
            && self.ledgers.iter().all(|l| l.done_at.is_some())
        {
            return;
        }
        for i in 0..self.ledgers.len() {
            self.publish(i);
        }
        self.seen_version = version;
    }

    /// Whether ledger `i` is done at tree size `size`: every witness holds
    /// a cosignature of it.
    fn cosigned_by_all(&self, i: usize, size: u64) -> bool {
        let name = &self.ledgers[i].settings.name;
        self.ledgers[i].witnesses.iter().all(|(c, _)| {
            let key = c.witness.vkey.to_string();
            self.mirror.witness_size(name, &key).ok().flatten() == Some(size)
        })
    }

    fn publish(&mut self, i: usize) {
        let name = self.ledgers[i].settings.name.clone();
        let origin = self.ledgers[i].settings.origin.clone();
        if let Ok(Some(tree)) = self.mirror.tree_head(&name) {
            self.ledgers[i].metrics.size.set(tree.size as i64);
        }
        match self.signer.sign(&self.mirror, &name, &origin) {
            Ok(signed) => {
                let l = &mut self.ledgers[i];
                if signed.new {
                    let size = signed.checkpoint.size;
                    if l.announced {
                        tracing::debug!(ledger = %name, size, "signed a checkpoint");
                    } else {
                        l.announced = true;
                        tracing::info!(ledger = %name, size, "signed a checkpoint (the next ones are logged at debug)");
                    }
                    l.metrics.checkpoint_timestamp.set(now_secs() as i64);
                } else if l.metrics.checkpoint_timestamp.get() == 0 {
                    let at = self
                        .mirror
                        .latest_checkpoint(&name)
                        .ok()
                        .flatten()
                        .and_then(|c| humantime::parse_rfc3339(&c.signed_at).ok());
                    let secs = at
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    l.metrics.checkpoint_timestamp.set(secs as i64);
                }
                l.metrics.checkpoint_size.set(signed.checkpoint.size as i64);
                if l.last_error.take().is_some() {
                    tracing::info!(ledger = %name, "signing checkpoints again");
                }
                note_meta(&self.mirror, &sign_error_key(&name), "");
                if let Ok(parsed) = SignedCheckpoint::parse(&signed.note) {
                    for w in 0..self.ledgers[i].witnesses.len() {
                        self.submit(i, w, &parsed);
                    }
                }
                let size = signed.checkpoint.size;
                self.ledgers[i].done_at = self.cosigned_by_all(i, size).then_some(size);
            }
            Err(TlogError::Empty { .. }) => self.ledgers[i].done_at = Some(0),
            Err(e) => {
                let text = e.to_string();
                let l = &mut self.ledgers[i];
                if l.last_error.as_deref() != Some(&text) {
                    tracing::error!(ledger = %name, error = %text, hint = e.hint().unwrap_or_default(), "not signing a checkpoint");
                    l.last_error = Some(text.clone());
                }
                note_meta(&self.mirror, &sign_error_key(&name), &text);
                l.done_at = None;
            }
        }
        if let Ok(Some((_, text))) = latest_with_cosignatures(&self.mirror, &name) {
            self.served
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, text);
        }
    }

    /// Offers the checkpoint to one witness, from the size it holds.
    fn submit(&mut self, i: usize, w: usize, signed: &SignedCheckpoint) {
        let name = self.ledgers[i].settings.name.clone();
        let (client, metrics) = self.ledgers[i].witnesses[w].clone();
        let witness = &client.witness;
        let key = witness.vkey.to_string();
        let size = signed.checkpoint.size;
        let cosigned = self.mirror.witness_size(&name, &key).ok().flatten();
        metrics.cosigned_size.set(cosigned.unwrap_or(0) as i64);
        if cosigned == Some(size) {
            return;
        }
        let holds = self.ledgers[i].witness_holds.get(witness.name()).copied();
        let mut old = holds.or(cosigned).unwrap_or(0);
        let fail = |why: String, mirror: &Mirror| {
            metrics.errors.inc();
            tracing::warn!(ledger = %name, witness = witness.name(), url = %witness.url, size, why = %why, "the witness did not cosign");
            note_meta(
                mirror,
                &witness_error_key(&name, witness.name()),
                &format!(
                    "{}: {why}",
                    humantime::format_rfc3339_seconds(SystemTime::now())
                ),
            );
        };
        for attempt in 0..2 {
            if old > size {
                fail(format!("it holds a checkpoint of size {old}, larger than the log's {size}: the mirror may have been restored or rebuilt"), &self.mirror);
                return;
            }
            let hashes = match self.mirror.consistency_proof(&name, old, size) {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    return fail(
                        format!("no consistency proof from {old}: {e}"),
                        &self.mirror,
                    )
                }
                Err(e) => return fail(format!("reading the tree: {e}"), &self.mirror),
            };
            let body = AddCheckpoint {
                old,
                hashes,
                checkpoint: signed.note.to_text(),
            };
            let answer =
                self.runtime
                    .block_on(client.add_checkpoint(&body, &signed.note, self.timeout));
            match answer {
                Ok(Answer::Cosigned { line, timestamp }) => {
                    let stored = StoredCosignature {
                        witness: key.clone(),
                        size,
                        line,
                        cosigned_at: timestamp,
                    };
                    if let Err(e) = self.mirror.store_cosignature(&name, &stored) {
                        return fail(format!("keeping its cosignature: {e}"), &self.mirror);
                    }
                    metrics.cosigned_size.set(size as i64);
                    self.ledgers[i]
                        .witness_holds
                        .insert(witness.name().to_owned(), size);
                    note_meta(&self.mirror, &witness_error_key(&name, witness.name()), "");
                    return;
                }
                Ok(Answer::HoldsSize(n)) if attempt == 0 && n != old => {
                    self.ledgers[i]
                        .witness_holds
                        .insert(witness.name().to_owned(), n);
                    old = n;
                }
                Ok(Answer::HoldsSize(n)) => {
                    return fail(
                        format!("409: it holds size {n} and refused a proof from it"),
                        &self.mirror,
                    )
                }
                Ok(Answer::Refused(why)) => return fail(why, &self.mirror),
                Err(why) => return fail(why, &self.mirror),
            }
        }
    }
}

impl Publisher {
    /// Loads the log key (a missing or bad key stops `run` from starting)
    /// and starts the thread; its first round runs at once.
    pub fn start(
        tlog: &TlogSettings,
        db: &std::path::Path,
        ledgers: &[LedgerSettings],
        telemetry: &Telemetry,
        served: Served,
    ) -> Result<Publisher, TlogError> {
        let signer = Signer::load(tlog)?;
        let mut clients = Vec::new();
        for w in &tlog.witnesses {
            clients.push(WitnessClient::new(w).map_err(|reason| TlogError::Witness {
                witness: w.name().to_owned(),
                url: w.url.clone(),
                reason,
            })?);
        }
        drop(Mirror::open(db, Access::ReadWrite)?);
        let db = db.to_path_buf();
        for l in ledgers {
            tracing::info!(ledger = %l.name, vkey = %signer.verifier_key(&l.origin), "the ledger's log signs checkpoints with this verifier key");
        }
        let ledgers = ledgers
            .iter()
            .map(|l| Ledger {
                settings: l.clone(),
                metrics: telemetry.tlog(&l.name),
                witnesses: clients
                    .iter()
                    .map(|c| (c.clone(), telemetry.witness(&l.name, c.witness.name())))
                    .collect(),
                witness_holds: HashMap::new(),
                last_error: None,
                done_at: None,
                announced: false,
            })
            .collect();
        let (interval, timeout) = (tlog.checkpoint_interval, tlog.witness_timeout);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tlog".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "the checkpoint publisher cannot start");
                        return;
                    }
                };
                // Its own connection: a mirror connection stays on its thread.
                let mirror = match Mirror::open(&db, Access::ReadWrite) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(error = %e, "the checkpoint publisher cannot open the mirror");
                        return;
                    }
                };
                let mut work = Work {
                    signer,
                    mirror,
                    runtime,
                    timeout,
                    ledgers,
                    served,
                    seen_version: None,
                };
                loop {
                    let started = Instant::now();
                    work.round();
                    let wait = interval.saturating_sub(started.elapsed());
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => return,
                    }
                }
            })
            .map_err(|e| TlogError::State {
                path: tlog.state_dir.clone(),
                source: e,
            })?;
        Ok(Publisher { stop, thread })
    }

    /// Stops after the round in flight (a witness answers within its
    /// timeout).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
