//! ECMAScript's number-to-text (`Number.prototype.toString`), by `ryu-js`:
//! the spelling RFC 8785 gives every number. The strict reader (`json`)
//! uses it to check that a big integer is spelled as its double, the
//! canonical writer (`jcs`) to write numbers; here, so that neither of
//! the two depends on the other for it.

/// ECMAScript's shortest round-trip text of a finite double (`-0` is `0`).
pub fn format_number(value: f64) -> String {
    let mut buf = ryu_js::Buffer::new();
    buf.format_finite(value).to_owned()
}

/// Appends [`format_number`]'s text of `value` to `out`, without
/// allocating.
pub fn write_number(out: &mut Vec<u8>, value: f64) {
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(value).as_bytes());
}
