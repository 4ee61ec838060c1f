//! The operator's next step for the library's errors: the hint shown
//! beside a message, in the daemon's logs as at the command line (which
//! adds its own for errors of the command line itself). The next step
//! for a refused line is the shipper's (`shipper::refusals`), which
//! tells the operator of refused lines.

use crate::config::ConfigError;
use crate::mirror::MirrorError;
use crate::postgres::PgError;
use crate::producer::ProduceError;
use crate::shipper::ShipError;

/// `Some(hint)` when `cause` is one of the library's errors (the hint
/// itself may be `None`); `None` when it is not one of ours.
pub fn recognized(cause: &(dyn std::error::Error + 'static)) -> Option<Option<String>> {
    if let Some(e) = cause.downcast_ref::<ConfigError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<MirrorError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<PgError>() {
        return Some(e.hint.clone());
    }
    if let Some(e) = cause.downcast_ref::<ProduceError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<crate::postgres::TargetError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<crate::keyfile::KeyFileError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<crate::tlog::TlogError>() {
        return Some(e.hint());
    }
    if let Some(e) = cause.downcast_ref::<crate::tlog::prove::ProveError>() {
        use crate::tlog::prove::ProveError;
        return Some(match e {
            ProveError::Mirror(m) => m.hint(),
            ProveError::Tlog(t) => t.hint(),
            _ => None,
        });
    }
    if let Some(e) = cause.downcast_ref::<ShipError>() {
        return Some(e.hint());
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::PermissionDenied {
            return Some(Some(
                "check the file's permissions and the user ledgertail runs as".into(),
            ));
        }
    }
    None
}

/// The hint for the first cause in `err`'s chain that is one of ours.
pub fn for_error(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(recognized).flatten()
}
