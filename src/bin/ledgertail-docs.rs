//! `ledgertail-docs --out DIR`: the man pages and shell completions of
//! `ledgertail`, generated from its clap definitions (so they can never
//! drift from the binary): `DIR/man/ledgertail.1` and one page per
//! subcommand (`ledgertail-run.1`, …), and `DIR/completions/` for bash
//! (`ledgertail.bash`), zsh (`_ledgertail`) and fish (`ledgertail.fish`).
//! The Debian package is built from them (see packaging/deb/).
//!
//! The synopsis, description and options come from clap; the few sections
//! clap has no notion of (signals, environment, files, see also) are
//! appended here, as prose that names no flag.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Writes the man pages and completions of ledgertail.
#[derive(Debug, Parser)]
#[command(name = "ledgertail-docs", version)]
struct Args {
    /// Where to write `man/` and `completions/` (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing into {}: {e}", args.out.display());
            ExitCode::from(2)
        }
    }
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    // Built once so each subcommand carries its display name
    // (`ledgertail-run`), which names its page.
    let mut cli = ledgertail::cli::Cli::command().disable_help_subcommand(true);
    cli.build();
    let subcommands: Vec<String> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect();
    write_page(&man, cli.clone(), &top_sections(&subcommands))?;
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(&man, sub.clone(), SUBCOMMAND_SECTIONS)?;
    }

    let mut cmd = ledgertail::cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "ledgertail", &completions)?;
    }
    Ok(())
}

fn write_page(dir: &Path, cmd: clap::Command, extra_roff: &str) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd)
        .source(format!("ledgertail {}", env!("CARGO_PKG_VERSION")))
        .manual("ledgertail manual");
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    // clap_mangen titles the after-help text "EXTRA"; on these pages it is
    // the exit status.
    let roff = String::from_utf8_lossy(&roff).replace(".SH EXTRA\n", ".SH \"EXIT STATUS\"\n");
    let mut file = std::fs::File::create(dir.join(page.get_filename()))?;
    file.write_all(roff.as_bytes())?;
    file.write_all(extra_roff.as_bytes())?;
    file.flush()
}

/// The sections of ledgertail(1) that clap does not describe: how the
/// sidecar answers signals, what it reads from the environment, where the
/// package puts its files, and the other pages.
fn top_sections(subcommands: &[String]) -> String {
    let see_also: Vec<String> = subcommands
        .iter()
        .map(|s| format!("\\fBledgertail\\-{s}\\fR(1)"))
        .chain(["\\fBsqlite3\\fR(1)".into(), "\\fBsystemctl\\fR(1)".into()])
        .collect();
    format!(
        r#".SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
The batches in flight commit, then the process exits with status 0.
A SIGKILL is safe too: the open transaction rolls back and its lines are
read again at the next start.
.TP
\fBSIGHUP\fR
Trusted keys, signature policies and the log level are read again from the
configuration file, and lines quarantined as unknown_key or unsigned are
judged again.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
A tracing filter (error, warn, info, debug, trace, off, or target=level
pairs); it overrides the configuration file's log_level, and
\fB\-\-log\-level\fR overrides it.
.TP
\fBLEDGERTAIL_POSTGRES_PASSWORD\fR
The password for the fleet store's connection string ([postgres] url);
it wins over one written in the string, and never appears in a log line,
an error or a metric. A shell without it (an operator's, beside a service
that has it) gets "not set in this environment" from status and check.
.TP
\fBSSL_CERT_FILE\fR, \fBSSL_CERT_DIR\fR
The trust store for an https:// witness that names no ca_file (else
/etc/ssl/certs).
.SH FILES
.TP
\fI/etc/ledgertail/ledgertail.toml\fR
The configuration of the packaged service (a conffile). Every option, with
its default and a comment, is in
\fI/usr/share/doc/ledgertail/ledgertail.toml\fR.
.TP
\fI/var/lib/ledgertail/\fR
The packaged service's one writable folder: the SQLite mirror
(\fIledgertail.db\fR, its \fI\-wal\fR and \fI\-shm\fR files, and
\fIledgertail.db.lock\fR, held by the one process that writes it).
Removing the package keeps it; purging removes it.
.TP
\fI/usr/share/ledgertail/prometheus/ledgertail\-alerts.yml\fR
Prometheus alert rules for the metrics served on /metrics, with their
unit tests beside them.
.TP
\fI/usr/lib/systemd/system/ledgertail.service\fR
The sidecar as a hardened service, enabled but not started on install.
\fIledgertail\-replay.service\fR and \fIledgertail\-replay.timer\fR run
one mirroring pass a minute instead; they are installed disabled, since
only one process may write a mirror.
.SH "SEE ALSO"
{}
"#,
        see_also.join(",\n")
    )
}

const SUBCOMMAND_SECTIONS: &str = r#".SH "SEE ALSO"
\fBledgertail\fR(1)
"#;
