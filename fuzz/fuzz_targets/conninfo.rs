//! The PostgreSQL connection string parser (`[postgres] url`, `verify
//! --postgres`, `setup-postgres`): a URL or libpq's key=value form, with
//! our own handling of sslmode and sslrootcert. Whatever the text, it must
//! not panic, and what logs show of a target never holds the password.
#![no_main]

use std::time::Duration;

use ledgertail::postgres::{Target, Timeouts};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "pw-from-the-environment";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        statement: Duration::from_secs(1),
    };
    if let Ok(target) = Target::parse(text, None, timeouts, Some(PASSWORD.into())) {
        if !text.contains(PASSWORD) {
            assert!(!target.shown().contains(PASSWORD), "{}", target.shown());
        }
        assert!(!format!("{target:?}").contains(PASSWORD) || text.contains(PASSWORD));
    }
});
