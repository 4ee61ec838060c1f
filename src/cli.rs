//! The command line : flags only, no logic. Each subcommand's
//! arguments are turned into [`Overrides`] for `config` to resolve.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{LogFormat, Overrides};
use crate::ledger::SignaturePolicy;

#[derive(Debug, Parser)]
#[command(
    name = "ledgertail",
    version,
    about = "Verify a hash-chained JSONL ledger and mirror it into SQLite, exactly once",
    long_about = None,
    after_help = "Exit status: 0 success; 1 (verify, replay) something quarantined, halted or out of parity; 2 could not run."
)]
pub struct Cli {
    /// Log format on stderr [default: the config's `log_format`, else text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    /// Overrides the config file's `log_level` and RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl Cli {
    /// What the flags chose for logging, and the config file the command
    /// reads (whose `log_level` and `log_format` apply otherwise).
    pub fn log_choice(&self) -> crate::logging::LogChoice<'_> {
        let config = match &self.command {
            Command::Run(a) => a.ledgers.config.as_deref(),
            Command::Verify(a) => a.ledgers.config.as_deref(),
            Command::Replay(a) => a.ledgers.config.as_deref(),
            Command::Status(a) => a.config.as_deref(),
            Command::Check(a) => Some(a.config.as_path()),
            Command::Append(a) => a.config.as_deref(),
            Command::Checkpoint(a) => a.config.as_deref(),
            Command::Prove(a) => a.config.as_deref(),
            Command::Keygen(_) | Command::SetupPostgres(_) | Command::VerifyProof(_) => None,
        };
        crate::logging::LogChoice {
            level: self.log_level.as_deref(),
            format: self.log_format.map(LogFormat::from),
            config,
        }
    }
}

impl From<LogFormatArg> for LogFormat {
    fn from(a: LogFormatArg) -> LogFormat {
        match a {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The sidecar: follow the ledger(s), mirror every sealed event, serve
    /// /metrics, /healthz and /readyz, until SIGTERM or SIGINT. SIGHUP
    /// reloads trusted keys, signature policies and the log level.
    Run(RunArgs),
    /// Seal payloads read from stdin (one JSON value per line) as the next
    /// events of a ledger, append them and fsync.
    Append(AppendArgs),
    /// Write a new Ed25519 key file (mode 0600) and print its [keys] line.
    Keygen(KeygenArgs),
    /// Judge every line of a ledger's files; with --db, check parity with
    /// the mirror.
    Verify(VerifyArgs),
    /// Mirror everything not yet mirrored, then exit (rebuilds a deleted
    /// database).
    Replay(ReplayArgs),
    /// Show each mirrored ledger's head, position, lag, halt and quarantine.
    Status(StatusArgs),
    /// Check a configuration before (re)starting with it: every path,
    /// key file, CA file, witness and PostgreSQL login, each problem with
    /// a hint. Exit 0 no problem, 1 problems, 2 the file cannot be read.
    Check(CheckArgs),
    /// Create, migrate or revise the fleet store's schema in PostgreSQL,
    /// and grant an ingest role the least it needs to ship.
    SetupPostgres(SetupPostgresArgs),
    /// Sign a checkpoint of each ledger's Merkle tree with the log
    /// key ([tlog] key) and print it; the log's verifier key goes to stderr.
    Checkpoint(CheckpointArgs),
    /// Write an offline proof that an event is in the latest signed
    /// checkpoint (a .tlog-proof file), or with --consistency that the
    /// latest checkpoint extends the tree of size --from.
    Prove(ProveArgs),
    /// Check a proof offline, with nothing but the log's verifier
    /// key (and the witnesses' keys a policy asks for).
    VerifyProof(VerifyProofArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Configuration file: its [tlog] table, db and ledgers.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The mirror.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Only this ledger (by name).
    #[arg(long, value_name = "NAME")]
    pub ledger: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// Configuration file: its db and ledgers.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The mirror.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// The ledger (by name).
    #[arg(long, value_name = "NAME")]
    pub ledger: String,
    /// The event to prove.
    #[arg(long, value_name = "N", conflicts_with = "consistency")]
    pub seq: Option<u64>,
    /// Prove that the latest checkpoint extends the tree of size --from.
    #[arg(long, requires = "from")]
    pub consistency: bool,
    /// With --consistency: the older tree size.
    #[arg(long, value_name = "M")]
    pub from: Option<u64>,
    /// Where to write the proof ("-": stdout). Default: LEDGER-SEQ.tlog-proof
    /// or LEDGER-M-N.tlog-consistency in the current folder.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// The log's verifier key (name+hash+base64), as `checkpoint` prints it.
    #[arg(long, value_name = "VKEY")]
    pub vkey: String,
    /// A witness's verifier key (repeatable).
    #[arg(long, value_name = "VKEY")]
    pub witness: Vec<String>,
    /// How many of the --witness keys must have cosigned (default: all).
    #[arg(long, value_name = "K")]
    pub min_witnesses: Option<usize>,
    /// Keep the latest checkpoint per log here, and refuse one that
    /// contradicts it.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The proof (.tlog-proof, or a consistency proof from `prove --consistency`).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SetupPostgresArgs {
    /// The database, as a role that may create the schema (its owner): a
    /// URL or key=value string; the password may come from
    /// LEDGERTAIL_POSTGRES_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub postgres: String,
    /// The schema of the central tables.
    #[arg(long, value_name = "NAME", default_value = "ledgertail")]
    pub schema: String,
    /// Grant this (existing) role what shipping needs and nothing more:
    /// the right to ship the sources --source names (or, with
    /// --all-sources, every source).
    #[arg(long, value_name = "ROLE")]
    pub grant: Vec<String>,
    /// A source the --grant roles may ship (repeatable). One role per host,
    /// granted that host's source alone, is the safe default: a stolen
    /// credential then cannot write another host's history.
    #[arg(
        long,
        value_name = "NAME",
        requires = "grant",
        conflicts_with = "all_sources"
    )]
    pub source: Vec<String>,
    /// Let the --grant roles ship every source, present and future (one
    /// role shared by a fleet: any host holding it can write every host's
    /// ledgers).
    #[arg(long, requires = "grant")]
    pub all_sources: bool,
    /// The CA that signed the server's certificate (sslmode=verify-ca or
    /// verify-full).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print the SQL of the grants instead of running them.
    #[arg(long)]
    pub print: bool,
    /// Where the view events_json takes each payload's jsonb from:
    /// `computed` parses it when a row is read (a new store's default;
    /// ingest is cheapest), `stored` keeps a copy in each row of events
    /// (queries on many payload fields are cheapest; switching to it
    /// rewrites the table while shipping waits). Default: leave it as it
    /// is.
    #[arg(long, value_name = "HOW")]
    pub payload_json: Option<PayloadJsonArg>,
}

/// `setup-postgres --payload-json`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PayloadJsonArg {
    Stored,
    Computed,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The ledger's live file (created if missing).
    #[arg(long, value_name = "FILE")]
    pub ledger: PathBuf,
    /// Sign each event with this key file (from `ledgertail keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The events' `type`.
    #[arg(long = "type", value_name = "T", default_value = "event")]
    pub event_type: String,
    /// The sidecar's line limit (its `max_line_bytes`): a longer line is
    /// never written. Default: the [[ledger]] table of --config for this
    /// file, else 1048576.
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<u64>,
    /// The sidecar's configuration file, for the ledger's line limit.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key file; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The key's id (default: the file's name without its extension).
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
}

/// Which ledger(s) and how to judge them: the config file, then flags.
#[derive(Debug, Args, Clone, Default)]
pub struct LedgerArgs {
    /// Configuration file (TOML); flags override it. Without one: the
    /// defaults (./ledger.jsonl into ./ledgertail.db, 127.0.0.1:9898).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Work on this ledger only (its [[ledger]] table applies if the config
    /// has one for this path) [default: the config's ledgers, else
    /// ./ledger.jsonl].
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// Signature policy [default: the ledger's `signatures`, else
    /// verify-if-present].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub signatures: Option<PolicyArg>,
    /// Longer lines are `too_long` [default: the ledger's
    /// `max_line_bytes`, else 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<u64>,
    /// The mirror must start at seq 0 [default: the ledger's
    /// `require_genesis`, else false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub require_genesis: Option<bool>,
    /// Trust a public key: ID=BASE64 (repeatable; adds to [keys]).
    #[arg(long, value_name = "ID=BASE64")]
    pub trust: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Off,
    VerifyIfPresent,
    Required,
}

impl From<PolicyArg> for SignaturePolicy {
    fn from(a: PolicyArg) -> SignaturePolicy {
        match a {
            PolicyArg::Off => SignaturePolicy::Off,
            PolicyArg::VerifyIfPresent => SignaturePolicy::VerifyIfPresent,
            PolicyArg::Required => SignaturePolicy::Required,
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub ledgers: LedgerArgs,
    /// Also check parity with this mirror.
    #[arg(long, value_name = "FILE", conflicts_with = "postgres")]
    pub db: Option<PathBuf>,
    /// Verify the fleet store instead: every central row's hash
    /// from its columns, the links, the signatures (a URL or key=value
    /// string; the password may come from LEDGERTAIL_POSTGRES_PASSWORD).
    /// With it, --ledger names a ledger, not a file.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// With --postgres: only this source's ledgers.
    #[arg(long, value_name = "S", requires = "postgres")]
    pub source: Option<String>,
    /// With --postgres: the schema of the central tables (default: the
    /// config's [postgres] schema, else "ledgertail").
    #[arg(long, value_name = "NAME", requires = "postgres")]
    pub schema: Option<String>,
    /// Print a machine-readable report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub ledgers: LedgerArgs,
    /// The mirror (created if missing) [default: the config's `db`, else
    /// ./ledgertail.db].
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ledgers: LedgerArgs,
    /// The mirror (created if missing) [default: the config's `db`, else
    /// ./ledgertail.db].
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz (port 0: any free port,
    /// logged at start) [default: the config's `listen`, else
    /// 127.0.0.1:9898].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration file: its `db`, and its ledgers' files for the lag.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The mirror.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl LedgerArgs {
    /// These flags as configuration overrides. Fails on a malformed --trust.
    pub fn overrides(&self, db: Option<PathBuf>) -> Result<Overrides, String> {
        let trust = self
            .trust
            .iter()
            .map(|t| {
                t.split_once('=')
                    .map(|(id, key)| (id.trim().to_owned(), key.trim().to_owned()))
                    .ok_or_else(|| format!("--trust {t}: expected ID=BASE64"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Overrides {
            config: self.config.clone(),
            db,
            ledger: self.ledger.clone(),
            signatures: self.signatures.map(Into::into),
            max_line_bytes: self.max_line_bytes,
            require_genesis: self.require_genesis,
            trust,
            listen: None,
            log_format: None,
        })
    }
}
