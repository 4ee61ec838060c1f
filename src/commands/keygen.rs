//! `ledgertail keygen --out FILE [--key-id ID]`

use std::process::ExitCode;

use super::{exit, EXIT_OK};
use crate::cli::KeygenArgs;
use crate::config::default_ledger_name;
use crate::producer::KeyFile;

pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let key_id = args
        .key_id
        .clone()
        .unwrap_or_else(|| default_ledger_name(&args.out));
    if !crate::ledger::seal::is_valid_key_id(&key_id) {
        anyhow::bail!(
            "key id {key_id:?} must be 1 to 128 bytes with no control character (give one with --key-id)"
        );
    }
    if args.out.exists() {
        anyhow::bail!(
            "{} already exists; a key file is never overwritten (choose another --out)",
            args.out.display()
        );
    }
    let key = KeyFile::generate(&key_id)?;
    // The error names the key file already.
    key.save_new(&args.out)?;
    // The same file serves a producer or the verifiable log; the advice
    // differs, and a log key under [keys] would let it sign events.
    eprintln!(
        "wrote {out} (mode 0600).\n\
         - a producer's signing key (`append --key`, the producer libraries): trust it\n  \
           in the sidecar's config with the line below, under [keys], then SIGHUP;\n\
         - a plain ledger's own key: set sign_key = \"{out}\" in its [[ledger]]; an\n  \
           auditor trusts the line below under [keys] of their own config;\n\
         - the verifiable log's key: set key = \"{out}\" under [tlog] instead, and\n  \
           never list it under [keys].",
        out = args.out.display()
    );
    outln!("{}", key.trust_line());
    Ok(exit(EXIT_OK))
}
