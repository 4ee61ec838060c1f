//! Standard output of the one-shot commands.
//!
//! A reader that goes away early (`ledgertail verify | head -1`) is not an
//! error: what is left unprinted is dropped and the command still ends with
//! the status its work earned (`${PIPESTATUS[0]}` still tells the verdict).
//! Any other failure to write (a full disk behind a redirection) is said
//! once on stderr and fails the command at the end: a report cut short
//! must not pass for a whole one. `println!` would panic on both.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Writes `args` (and a newline when `newline`) to standard output, unless
/// an earlier write found it closed or failing.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => STATE.store(CLOSED, Ordering::Relaxed),
        Err(e) => {
            STATE.store(FAILED, Ordering::Relaxed);
            eprintln!("error: writing to standard output: {e}");
            eprintln!("hint: the output was cut short; check where it was redirected (a full disk, a file size limit) and run the command again");
        }
    }
}

/// Whether writing to standard output failed (other than its reader
/// leaving): the command must not exit as if its report was whole.
pub fn failed() -> bool {
    STATE.load(Ordering::Relaxed) == FAILED
}
