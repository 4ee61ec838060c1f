//! `status`'s view of the verifiable log (contract §7): each ledger's tree
//! size, its latest signed checkpoint, and with `[tlog]` in --config the
//! log's verifier key, the last refusal to sign, and each witness's latest
//! cosigned size and last refusal (as `run`'s publisher left them in the
//! mirror's `meta`).

use serde::Serialize;

use crate::config::Settings;
use crate::mirror::Mirror;
use crate::tlog::publish::{sign_error_key, witness_error_key};

#[derive(Debug, Serialize)]
pub struct TlogView {
    pub tree_size: u64,
    /// The latest signed checkpoint's size (null: none yet).
    pub checkpoint_size: Option<u64>,
    pub checkpoint_signed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The log's verifier key (null: the log key is not readable here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vkey: Option<String>,
    /// Why the last attempt to sign was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub witnesses: Vec<WitnessView>,
}

#[derive(Debug, Serialize)]
pub struct WitnessView {
    pub name: String,
    pub cosigned_size: Option<u64>,
    /// The last refusal or failure (cleared by a cosignature).
    pub error: Option<String>,
}

fn meta(mirror: &Mirror, key: &str) -> Option<String> {
    mirror.meta(key).ok().flatten().filter(|v| !v.is_empty())
}

/// The view of one ledger; `None` before its first event.
pub fn view(mirror: &Mirror, ledger: &str, settings: Option<&Settings>) -> Option<TlogView> {
    let tree = mirror.tree_head(ledger).ok().flatten()?;
    let latest = mirror.latest_checkpoint(ledger).ok().flatten();
    let config = settings.and_then(|s| {
        Some((
            s.tlog.as_ref()?,
            s.ledgers.iter().find(|l| l.name == ledger)?,
        ))
    });
    let (origin, vkey, witnesses) = match config {
        Some((tlog, l)) => {
            let vkey = crate::tlog::Signer::load(tlog)
                .ok()
                .map(|s| s.verifier_key(&l.origin).to_string());
            let witnesses = tlog
                .witnesses
                .iter()
                .map(|w| WitnessView {
                    name: w.name().to_owned(),
                    cosigned_size: mirror
                        .witness_size(ledger, &w.vkey.to_string())
                        .ok()
                        .flatten(),
                    error: meta(mirror, &witness_error_key(ledger, w.name())),
                })
                .collect();
            (Some(l.origin.clone()), vkey, witnesses)
        }
        None => (None, None, Vec::new()),
    };
    Some(TlogView {
        tree_size: tree.size,
        checkpoint_size: latest.as_ref().map(|c| c.size),
        checkpoint_signed_at: latest.map(|c| c.signed_at),
        origin,
        vkey,
        refused: meta(mirror, &sign_error_key(ledger)),
        witnesses,
    })
}

pub fn print(v: &TlogView) {
    let signed = match (v.checkpoint_size, &v.checkpoint_signed_at) {
        (Some(size), Some(at)) => format!("latest checkpoint size {size}, signed {at}"),
        _ => "no checkpoint signed".into(),
    };
    outln!("  tlog       tree size {}, {signed}", v.tree_size);
    if let Some(o) = &v.origin {
        outln!("  origin     {o}");
    }
    if let Some(k) = &v.vkey {
        outln!("  vkey       {k}");
    }
    if let Some(r) = &v.refused {
        outln!("  REFUSED    {r}");
    }
    for w in &v.witnesses {
        let size = w.cosigned_size.map_or("nothing cosigned yet".into(), |s| {
            format!("cosigned size {s}")
        });
        match &w.error {
            Some(e) => outln!("  witness    {}: {size}; last refusal {e}", w.name),
            None => outln!("  witness    {}: {size}", w.name),
        }
    }
}
