//! The checkpoint publisher of `run` (contract §7): a thread that, every
//! `checkpoint_interval`, signs a checkpoint of each ledger whose tree
//! grew (all of a round in one batch of writes), serves it at once on
//! `GET /tlog/<ledger>/checkpoint`, then offers it to every
//! `[[tlog.witness]]` with a consistency proof from the size that witness
//! last cosigned (every offer of a round at once, a bounded number in
//! flight), keeps the verified cosignatures in the mirror, and serves the
//! checkpoint again with them. The log's own publication never waits on a
//! witness, and a stop cuts witness requests short. A refusal (the signer's
//! or a witness's) is logged, counted and written to the mirror's `meta`
//! for `status`; it never stops the mirroring. A round in which nothing
//! was committed and nothing is left to retry is a single pragma.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::witness::{Answer, WitnessClient};
use super::{latest_with_cosignatures, Signed, Signer, TlogError};
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
    stop: watch::Sender<bool>,
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
    /// Witness requests in flight, across rounds: a round never waits
    /// for them, and their answers are taken as they come.
    calls: JoinSet<Result<Answer, String>>,
    /// The offer behind each request in flight, by its task.
    in_flight: HashMap<tokio::task::Id, Offer>,
    /// Bounds the requests in flight at once.
    turns: Arc<Semaphore>,
}

/// What the publisher thread wakes up for.
enum Wake {
    /// The next round is due.
    Round,
    /// A witness answered (or its request ended).
    Answered(tokio::task::Id, Result<Answer, String>),
    Stop,
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

/// Witness requests in flight at once, across every ledger and witness
/// (the rest wait for a turn; none holds up signing).
const MAX_WITNESS_CALLS: usize = 32;

/// One checkpoint offered to one witness.
struct Offer {
    /// The ledger and the witness, by index.
    i: usize,
    w: usize,
    /// The size the consistency proof starts from.
    old: u64,
    /// 0, or 1 for the offer made again from the size a witness holds.
    attempt: usize,
    signed: SignedCheckpoint,
    body: AddCheckpoint,
}

impl Work {
    /// One round over the ledgers: every grown tree signed (in one batch)
    /// and served at once; then the new checkpoints offered to the
    /// witnesses, all at once (with a bound), cut short by a stop. When
    /// nothing was committed to the mirror since the last round and every
    /// ledger was done, the round is one pragma, whatever the number of
    /// ledgers.
    fn round(&mut self) {
        let version = self.mirror.data_version().ok();
        if version.is_some()
            && version == self.seen_version
            && self.ledgers.iter().all(|l| l.done_at.is_some())
        {
            return;
        }
        let todo = self.grown();
        let signed = self.sign(&todo);
        for (i, checkpoint) in signed {
            for w in 0..self.ledgers[i].witnesses.len() {
                // One request per ledger and witness at a time; a newer
                // checkpoint is offered once the one in flight is answered.
                if self.in_flight.values().any(|o| o.i == i && o.w == w) {
                    continue;
                }
                if let Some(offer) = self.offer(i, w, &checkpoint, None, 0) {
                    self.send(offer);
                }
            }
            self.update_done(i);
        }
        self.seen_version = version;
    }

    /// Ledger `i` is done when its latest checkpoint is signed and every
    /// witness holds a cosignature of it.
    fn update_done(&mut self, i: usize) {
        let size = self.ledgers[i].metrics.checkpoint_size.get() as u64;
        if self.ledgers[i].last_error.is_none() && size > 0 {
            self.ledgers[i].done_at = self.cosigned_by_all(i, size).then_some(size);
        }
    }

    /// Sends an offer; its answer is taken when it comes ([`Wake`]).
    fn send(&mut self, offer: Offer) {
        let client = self.ledgers[offer.i].witnesses[offer.w].0.clone();
        let (body, note) = (offer.body.clone(), offer.signed.note.clone());
        let (turns, timeout) = (self.turns.clone(), self.timeout);
        // Spawned on the publisher's runtime: it runs while the thread
        // waits for its next wake-up.
        let _guard = self.runtime.enter();
        let task = self.calls.spawn(async move {
            let _turn = turns.acquire_owned().await;
            client.add_checkpoint(&body, &note, timeout).await
        });
        self.in_flight.insert(task.id(), offer);
    }

    /// Waits, driving the requests in flight, until the next round is
    /// due at `due`, an answer comes, or a stop.
    fn wait(&mut self, due: Instant, stop: &mut watch::Receiver<bool>) -> Wake {
        let calls = &mut self.calls;
        self.runtime.block_on(async {
            tokio::select! {
                _ = stop.changed() => Wake::Stop,
                _ = tokio::time::sleep_until(due.into()) => Wake::Round,
                Some(joined) = calls.join_next_with_id(), if !calls.is_empty() => match joined {
                    Ok((id, answer)) => Wake::Answered(id, answer),
                    Err(e) => Wake::Answered(e.id(), Err(format!("the request ended abnormally: {e}"))),
                },
            }
        })
    }

    /// Takes a witness's answer: keeps the cosignature and serves it, or
    /// counts the refusal; a witness holding another size is offered a
    /// proof from there, once.
    fn answered(&mut self, id: tokio::task::Id, answer: Result<Answer, String>) {
        let Some(offer) = self.in_flight.remove(&id) else {
            return;
        };
        let (i, attempt) = (offer.i, offer.attempt);
        if let Some(retry) = self.take_answer(offer, answer, attempt) {
            self.send(retry);
        }
        self.serve(i);
        self.update_done(i);
    }

    /// The ledgers with something to do: a tree that grew past the size
    /// at which everything was done, or something left to retry.
    fn grown(&mut self) -> Vec<usize> {
        let mut todo = Vec::new();
        for i in 0..self.ledgers.len() {
            let name = &self.ledgers[i].settings.name;
            let size = match self.mirror.tree_head(name) {
                Ok(Some(tree)) => tree.size,
                Ok(None) => 0,
                Err(_) => {
                    todo.push(i);
                    continue;
                }
            };
            self.ledgers[i].metrics.size.set(size as i64);
            if self.ledgers[i].done_at != Some(size) {
                todo.push(i);
            }
        }
        todo
    }

    /// Signs the trees of `todo` in one batch, serves each new checkpoint
    /// at once (before any witness is asked), and returns the checkpoints
    /// to offer.
    fn sign(&mut self, todo: &[usize]) -> Vec<(usize, SignedCheckpoint)> {
        let pairs: Vec<(String, String)> = todo
            .iter()
            .map(|&i| {
                let s = &self.ledgers[i].settings;
                (s.name.clone(), s.origin.clone())
            })
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, o)| (n.as_str(), o.as_str()))
            .collect();
        let results = self.signer.sign_all(&self.mirror, &refs);
        let mut out = Vec::new();
        for (&i, result) in todo.iter().zip(results) {
            match result {
                Ok(signed) => {
                    self.signed(i, &signed);
                    self.serve(i);
                    if let Ok(parsed) = SignedCheckpoint::parse(&signed.note) {
                        out.push((i, parsed));
                    }
                }
                Err(TlogError::Empty { .. }) => self.ledgers[i].done_at = Some(0),
                Err(e) => self.refused(i, &e),
            }
        }
        out
    }

    /// Logs, counts and notes a checkpoint of ledger `i` signed (or
    /// found already signed).
    fn signed(&mut self, i: usize, signed: &Signed) {
        let name = self.ledgers[i].settings.name.clone();
        let l = &mut self.ledgers[i];
        let size = signed.checkpoint.size;
        if signed.new {
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
        l.metrics.checkpoint_size.set(size as i64);
        if l.last_error.take().is_some() {
            tracing::info!(ledger = %name, "signing checkpoints again");
        }
        note_meta(&self.mirror, &sign_error_key(&name), "");
    }

    /// The signer refused ledger `i`: logged once per reason, noted for
    /// `status`, retried next round.
    fn refused(&mut self, i: usize, e: &TlogError) {
        let name = self.ledgers[i].settings.name.clone();
        let text = e.to_string();
        let l = &mut self.ledgers[i];
        if l.last_error.as_deref() != Some(&text) {
            tracing::error!(ledger = %name, error = %text, hint = e.hint().unwrap_or_default(), "not signing a checkpoint");
            l.last_error = Some(text.clone());
        }
        note_meta(&self.mirror, &sign_error_key(&name), &text);
        l.done_at = None;
    }

    /// Hands ledger `i`'s latest checkpoint, with the cosignatures kept,
    /// to `GET /tlog/<ledger>/checkpoint`.
    fn serve(&self, i: usize) {
        let name = &self.ledgers[i].settings.name;
        if let Ok(Some((_, text))) = latest_with_cosignatures(&self.mirror, name) {
            self.served
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), text);
        }
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

    /// The offer of `signed` to witness `w` of ledger `i`, from the size
    /// it holds (`from`: the size it just said it holds); `None` when it
    /// already cosigned it or no proof can be made (a refusal, counted).
    fn offer(
        &mut self,
        i: usize,
        w: usize,
        signed: &SignedCheckpoint,
        from: Option<u64>,
        attempt: usize,
    ) -> Option<Offer> {
        let name = self.ledgers[i].settings.name.clone();
        let (client, metrics) = self.ledgers[i].witnesses[w].clone();
        let key = client.witness.vkey.to_string();
        let size = signed.checkpoint.size;
        let cosigned = self.mirror.witness_size(&name, &key).ok().flatten();
        metrics.cosigned_size.set(cosigned.unwrap_or(0) as i64);
        if cosigned == Some(size) {
            return None;
        }
        let holds = self.ledgers[i]
            .witness_holds
            .get(client.witness.name())
            .copied();
        let old = from.or(holds).or(cosigned).unwrap_or(0);
        if old > size {
            self.witness_failed(i, w, size, format!("it holds a checkpoint of size {old}, larger than the log's {size}: the mirror may have been restored or rebuilt"));
            return None;
        }
        let hashes = match self.mirror.consistency_proof(&name, old, size) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.witness_failed(i, w, size, format!("no consistency proof from {old}: {e}"));
                return None;
            }
            Err(e) => {
                self.witness_failed(i, w, size, format!("reading the tree: {e}"));
                return None;
            }
        };
        Some(Offer {
            i,
            w,
            old,
            attempt,
            signed: signed.clone(),
            body: AddCheckpoint {
                old,
                hashes,
                checkpoint: signed.note.to_text(),
            },
        })
    }

    /// Keeps a cosignature, or counts a refusal; an offer to make again
    /// when the witness holds another size (first attempt only).
    fn take_answer(
        &mut self,
        offer: Offer,
        answer: Result<Answer, String>,
        attempt: usize,
    ) -> Option<Offer> {
        let (i, w) = (offer.i, offer.w);
        let size = offer.signed.checkpoint.size;
        let name = self.ledgers[i].settings.name.clone();
        let (client, metrics) = self.ledgers[i].witnesses[w].clone();
        let witness = &client.witness;
        match answer {
            Ok(Answer::Cosigned { line, timestamp }) => {
                let stored = StoredCosignature {
                    witness: witness.vkey.to_string(),
                    size,
                    line,
                    cosigned_at: timestamp,
                };
                if let Err(e) = self.mirror.store_cosignature(&name, &stored) {
                    self.witness_failed(i, w, size, format!("keeping its cosignature: {e}"));
                    return None;
                }
                metrics.cosigned_size.set(size as i64);
                self.ledgers[i]
                    .witness_holds
                    .insert(witness.name().to_owned(), size);
                note_meta(&self.mirror, &witness_error_key(&name, witness.name()), "");
                None
            }
            Ok(Answer::HoldsSize(n)) if attempt == 0 && n != offer.old => {
                self.ledgers[i]
                    .witness_holds
                    .insert(witness.name().to_owned(), n);
                self.offer(i, w, &offer.signed, Some(n), attempt + 1)
            }
            Ok(Answer::HoldsSize(n)) => {
                self.witness_failed(
                    i,
                    w,
                    size,
                    format!("409: it holds size {n} and refused a proof from it"),
                );
                None
            }
            Ok(Answer::Refused(why)) | Err(why) => {
                self.witness_failed(i, w, size, why);
                None
            }
        }
    }

    /// A witness did not cosign: counted, logged, noted for `status`.
    fn witness_failed(&self, i: usize, w: usize, size: u64, why: String) {
        let name = &self.ledgers[i].settings.name;
        let (client, metrics) = &self.ledgers[i].witnesses[w];
        let witness = &client.witness;
        // The reason first: whoever sees the count can read why.
        note_meta(
            &self.mirror,
            &witness_error_key(name, witness.name()),
            &format!(
                "{}: {why}",
                humantime::format_rfc3339_seconds(SystemTime::now())
            ),
        );
        tracing::warn!(ledger = %name, witness = witness.name(), url = %witness.url, size, why = %why, "the witness did not cosign");
        metrics.errors.inc();
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
                reason: reason.to_string(),
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
        let (stop, mut stopped) = watch::channel(false);
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
                    calls: JoinSet::new(),
                    in_flight: HashMap::new(),
                    turns: Arc::new(Semaphore::new(MAX_WITNESS_CALLS)),
                };
                let mut due = Instant::now();
                loop {
                    if Instant::now() >= due {
                        due = Instant::now() + interval;
                        work.round();
                    }
                    match work.wait(due, &mut stopped) {
                        Wake::Round => {}
                        Wake::Answered(id, answer) => work.answered(id, answer),
                        // Requests in flight are abandoned: their
                        // checkpoints are offered again at the next start.
                        Wake::Stop => {
                            work.calls.abort_all();
                            return;
                        }
                    }
                }
            })
            .map_err(|e| TlogError::State {
                path: tlog.state_dir.clone(),
                source: e,
            })?;
        Ok(Publisher { stop, thread })
    }

    /// Stops: witness requests in flight are abandoned (their checkpoint
    /// is offered again at the next start); signing is never cut short.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}
