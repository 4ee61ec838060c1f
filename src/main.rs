//! The `ledgertail` binary: parse the command line, set up logging,
//! dispatch, and turn the outcome into the contract's exit status.

use std::process::ExitCode;

use clap::Parser as _;
use ledgertail::cli::{Cli, Command};
use ledgertail::commands::{self, hint_for, render_error, EXIT_FAILED};

fn main() -> ExitCode {
    commands::raise_open_files_limit();
    let cli = Cli::parse();
    let log_control = match ledgertail::logging::init(cli.log_choice()) {
        Ok(control) => control,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: use error, warn (or warning), info, debug, trace or off, or `target=level` pairs such as ledgertail=debug");
            return commands::exit(EXIT_FAILED);
        }
    };
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args, log_control),
        Command::Append(args) => commands::append::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::SetupPostgres(args) => commands::setup_postgres::run(args),
        Command::Checkpoint(args) => commands::tlog::checkpoint(args),
        Command::Prove(args) => commands::tlog::prove(args),
        Command::VerifyProof(args) => commands::tlog::verify_proof(args),
    };
    match result {
        Ok(_) if commands::output::failed() => commands::exit(EXIT_FAILED),
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", render_error(&err));
            if let Some(hint) = hint_for(&err) {
                eprintln!("hint: {hint}");
            }
            commands::exit(EXIT_FAILED)
        }
    }
}
