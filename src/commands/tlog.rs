//! `ledgertail checkpoint`, `prove` and `verify-proof` (contract §7): sign
//! a checkpoint of each ledger's tree, write an offline proof of one event
//! (or of the tree's consistency), and check such a proof with nothing but
//! the log's verifier key.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{exit, EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS};
use crate::cli::{CheckpointArgs, ProveArgs, VerifyProofArgs};
use crate::config::{Overrides, Settings};
use crate::ledger::note::VerifierKey;
use crate::mirror::{Access, Mirror};
use crate::tlog::prove::{prove_consistency, prove_event};
use crate::tlog::Signer;

fn load(
    config: &Option<std::path::PathBuf>,
    db: &Option<std::path::PathBuf>,
) -> anyhow::Result<Settings> {
    let settings = Settings::load(&Overrides {
        config: config.clone(),
        db: db.clone(),
        ..Overrides::default()
    })?;
    Ok(settings)
}

/// The ledgers a command works on: one by name, or all of the config's.
fn chosen<'s>(
    settings: &'s Settings,
    name: Option<&str>,
) -> anyhow::Result<Vec<&'s crate::config::LedgerSettings>> {
    match name {
        None => Ok(settings.ledgers.iter().collect()),
        Some(n) => match settings.ledgers.iter().find(|l| l.name == n) {
            Some(l) => Ok(vec![l]),
            None => anyhow::bail!(
                "no ledger named `{n}` in the configuration (it has: {})",
                settings
                    .ledgers
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

pub fn checkpoint(args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config, &args.db)?;
    let Some(tlog) = &settings.tlog else {
        anyhow::bail!(crate::tlog::TlogError::NotConfigured);
    };
    let signer = Signer::load(tlog)?;
    let mirror = Mirror::open(&settings.db, Access::ReadWrite)?;
    let mut failed = false;
    for l in chosen(&settings, args.ledger.as_deref())? {
        match signer.sign(&mirror, &l.name, &l.origin) {
            Ok(signed) => {
                eprintln!(
                    "ledger `{}`: {} checkpoint of size {} (seq {}); verifier key: {}",
                    l.name,
                    if signed.new {
                        "signed a new"
                    } else {
                        "the latest"
                    },
                    signed.checkpoint.size,
                    mirror
                        .state(&l.name)?
                        .and_then(|s| s.anchor)
                        .map_or(0, |a| a.seq + signed.checkpoint.size - 1),
                    signer.verifier_key(&l.origin)
                );
                out!("{}", signed.note);
            }
            Err(e) => {
                failed = true;
                eprintln!("error: {e}");
                if let Some(hint) = e.hint() {
                    eprintln!("hint: {hint}");
                }
            }
        }
    }
    Ok(exit(if failed { EXIT_PROBLEMS } else { EXIT_OK }))
}

fn write_out(out: Option<&Path>, default: &str, text: &str) -> anyhow::Result<()> {
    let path = out.unwrap_or(Path::new(default));
    if path == Path::new("-") {
        out!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub fn prove(args: ProveArgs) -> anyhow::Result<ExitCode> {
    let settings = load(&args.config, &args.db)?;
    let ledger = &chosen(&settings, Some(&args.ledger))?[0].name;
    let mirror = Mirror::open(&settings.db, Access::ReadOnly)?;
    if args.consistency {
        let from = args.from.unwrap_or(0);
        let (body, size) = prove_consistency(&mirror, ledger, from)?;
        let default = format!("{ledger}-{from}-{size}.tlog-consistency");
        write_out(args.out.as_deref(), &default, &body.to_text())?;
        return Ok(exit(EXIT_OK));
    }
    let Some(seq) = args.seq else {
        anyhow::bail!("give --seq N (the event to prove), or --consistency --from M");
    };
    let proof = prove_event(&mirror, ledger, seq)?;
    let default = format!("{ledger}-{seq}.tlog-proof");
    write_out(args.out.as_deref(), &default, &proof.to_text())?;
    Ok(exit(EXIT_OK))
}

pub fn verify_proof(args: VerifyProofArgs) -> anyhow::Result<ExitCode> {
    let vkey = VerifierKey::parse(&args.vkey).context("--vkey")?;
    let witnesses = args
        .witness
        .iter()
        .map(|w| VerifierKey::parse(w).with_context(|| format!("--witness {w}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let policy = crate::tlog::verify::Policy {
        log: vkey,
        witnesses,
        min_witnesses: args.min_witnesses.unwrap_or(args.witness.len()),
        state: args.state.clone(),
    };
    match crate::tlog::verify::check(&policy, &text) {
        Ok(report) => {
            outln!("{}: {report}", args.file.display());
            Ok(exit(EXIT_OK))
        }
        Err(crate::tlog::verify::Rejected::Invalid(why)) => {
            outln!("{}: INVALID: {why}", args.file.display());
            Ok(exit(EXIT_PROBLEMS))
        }
        Err(crate::tlog::verify::Rejected::Security(evidence)) => {
            outln!("{}: SECURITY: {evidence}", args.file.display());
            Ok(exit(EXIT_PROBLEMS))
        }
        Err(crate::tlog::verify::Rejected::CannotRun(why)) => {
            eprintln!("error: {why}");
            Ok(exit(EXIT_FAILED))
        }
    }
}
