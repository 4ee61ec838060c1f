//! `ledgertail append --ledger FILE [--key FILE] [--type T]`
//!
//! Payloads arrive on stdin, one JSON value per line. Lines that have
//! already arrived are sealed together (one lock, one write per line, one
//! fsync); the command never waits for more input before appending what it
//! has, so `tail -f app.log | ledgertail append …` appends as lines come.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::Context as _;

use super::{exit, EXIT_OK};
use crate::cli::AppendArgs;
use crate::ledger::json;
use crate::producer::{KeyFile, Writer};

/// The most payloads sealed under one lock.
const MAX_BATCH: usize = 1000;

pub fn run(args: AppendArgs) -> anyhow::Result<ExitCode> {
    if args.event_type.is_empty() || args.event_type.len() > 256 {
        anyhow::bail!("--type must be 1 to 256 bytes");
    }
    super::survive_file_size_limit()?;
    // The line limit is the sidecar's: from the flag, else the ledger's
    // table in the config, else the default.
    let settings = crate::config::Settings::load(&crate::config::Overrides {
        config: args.config.clone(),
        ledger: Some(args.ledger.clone()),
        max_line_bytes: args.max_line_bytes,
        ..crate::config::Overrides::default()
    })?;
    let max_line_bytes = settings.ledgers[0].max_line_bytes;
    let mut writer = Writer::new(&args.ledger).with_max_line_bytes(max_line_bytes);
    if let Some(key_path) = &args.key {
        writer = writer.with_key(KeyFile::load(key_path)?);
    }
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(1024 * 1024, stdin.lock());
    let mut line_no = 0u64;
    let mut appended = 0u64;
    let mut first_last: Option<(u64, u64)> = None;
    let mut batch: Vec<String> = Vec::new();
    loop {
        batch.clear();
        // One line (blocking), then whatever complete lines are buffered.
        let mut eof = false;
        while batch.len() < MAX_BATCH {
            let mut raw = Vec::new();
            let n = read_line(&mut input, &mut raw).context("reading stdin")?;
            if n == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            let text = String::from_utf8(raw).map_err(|e| {
                anyhow::anyhow!(
                    "stdin line {line_no}: invalid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                )
            })?;
            if crate::ledger::is_blank(text.as_bytes()) {
                continue;
            }
            if let Err(e) = json::parse(&text) {
                flush(&mut writer, &args, &batch, &mut appended, &mut first_last)?;
                return Err(PayloadRefused {
                    line_no,
                    why: e,
                    before: done_so_far(appended, first_last),
                }
                .into());
            }
            batch.push(text);
            if !input.buffer().contains(&b'\n') {
                break;
            }
        }
        flush(&mut writer, &args, &batch, &mut appended, &mut first_last)?;
        if eof {
            break;
        }
    }
    match first_last {
        Some(_) => eprintln!(
            "appended {} to {}",
            done_so_far(appended, first_last),
            args.ledger.display()
        ),
        None => eprintln!("nothing to append (stdin had no payload)"),
    }
    Ok(exit(EXIT_OK))
}

fn read_line(input: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    // Cap a single payload line at 64 MiB so a runaway producer cannot
    // exhaust memory; longer lines fail below as unacceptable JSON.
    input.by_ref().take(64 * 1024 * 1024).read_until(b'\n', out)
}

fn flush(
    writer: &mut Writer,
    args: &AppendArgs,
    batch: &[String],
    appended: &mut u64,
    first_last: &mut Option<(u64, u64)>,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let payloads: Vec<&str> = batch.iter().map(String::as_str).collect();
    let done = writer
        .append_batch(&args.event_type, &payloads)
        .with_context(|| {
            format!(
                "appending to {} ({} before this batch)",
                args.ledger.display(),
                done_so_far(*appended, *first_last)
            )
        })?;
    *appended += done.len() as u64;
    if let (Some(first), Some(last)) = (done.first(), done.last()) {
        let start = first_last.map_or(first.seq, |(f, _)| f);
        *first_last = Some((start, last.seq));
    }
    Ok(())
}

/// "1 event (seq 4)", "3 events (seqs 4 to 6)", "no event".
fn done_so_far(appended: u64, first_last: Option<(u64, u64)>) -> String {
    match first_last {
        None => "no event appended".into(),
        Some((first, last)) if first == last => format!("1 event (seq {first})"),
        Some((first, last)) => format!("{appended} events (seqs {first} to {last})"),
    }
}

/// A stdin line that is not a payload the sidecar would accept.
#[derive(Debug, thiserror::Error)]
#[error("stdin line {line_no}: payload is not acceptable JSON: {why}; before it: {before}, nothing after")]
pub struct PayloadRefused {
    line_no: u64,
    why: json::JsonError,
    before: String,
}

impl PayloadRefused {
    /// What to do, by what was refused.
    pub fn hint(&self) -> &'static str {
        let m = &self.why.message;
        if m.starts_with("repeated member name") {
            "write each member name once (JSON.parse and json.loads keep only the last one, so the producer may not know it repeats one)"
        } else if m.contains("2^53") {
            "write integers beyond ±(2^53−1) as strings: JSON numbers are read as doubles"
        } else {
            "each stdin line is one JSON value, the event's payload, e.g. {\"order\":1}"
        }
    }
}
