//! Bounds on the text a data plane sends over the config stream.
//!
//! A replica's `node_id` and `version` are kept for as long as it is connected, shown by
//! `ListDataPlanes` and written to the log; a `Nack.error` is kept until the next one. With a
//! node token a replica is trusted to configure itself, not to fill the control plane's memory,
//! forge log lines or rewrite an operator's terminal. So an oversized or unprintable `Hello`
//! field refuses the stream (`INVALID_ARGUMENT`: a replica that sends one is misconfigured and
//! should say so loudly), while a `Nack.error` (a diagnostic, which must not be lost) is kept
//! escaped and truncated with a marker. Each replica then costs at most about 1.5 KB, so a page
//! of 1000 fits well inside the 4 MiB gRPC message limit. Documented in `docs/OPERATIONS.md`.

use aurora_core::text;
use aurora_proto::v1::Hello;
use tonic::Status;

/// A DNS name's length: long enough for any pod or host name.
pub const MAX_NODE_ID_BYTES: usize = 253;
/// Longer than any semantic version with build metadata.
pub const MAX_VERSION_BYTES: usize = 128;
/// What is kept of a rejection reason (after escaping), plus the truncation marker.
pub const MAX_NACK_ERROR_BYTES: usize = 1024;

/// Refuses a `Hello` whose text fields could not be shown or stored safely.
pub fn check_hello(hello: &Hello) -> Result<(), Status> {
    check_text("node_id", &hello.node_id, 1, MAX_NODE_ID_BYTES)?;
    check_text("version", &hello.version, 0, MAX_VERSION_BYTES)
}

fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), Status> {
    if value.len() < min || value.len() > max {
        return Err(Status::invalid_argument(format!("{field}: must be {min} to {max} bytes")));
    }
    if let Some(c) = text::first_unsafe_char(value) {
        return Err(Status::invalid_argument(format!(
            "{field}: must not contain control, bidi-override or line-separator characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

/// A rejection reason as it is kept and logged: unsafe characters escaped, then cut to
/// [`MAX_NACK_ERROR_BYTES`] with a marker that gives the length the replica sent.
pub fn nack_error(raw: &str) -> String {
    let escaped = text::escape(raw);
    if escaped.len() <= MAX_NACK_ERROR_BYTES {
        return escaped.into_owned();
    }
    format!("{}… [truncated from {} bytes]", text::cut(&escaped, MAX_NACK_ERROR_BYTES), raw.len())
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn hello(node_id: &str, version: &str) -> Hello {
        Hello { node_id: node_id.into(), version: version.into(), ..Hello::default() }
    }

    #[test]
    fn hello_fields_are_bounded_and_printable() {
        assert!(check_hello(&hello("dp-0", "0.1.0")).is_ok());
        assert!(check_hello(&hello(&"n".repeat(MAX_NODE_ID_BYTES), &"v".repeat(MAX_VERSION_BYTES))).is_ok());
        for (bad, field) in [
            (hello("", "0.1.0"), "node_id"),
            (hello(&"n".repeat(MAX_NODE_ID_BYTES + 1), "0.1.0"), "node_id"),
            (hello("dp\n2026-01-01 INFO forged", "0.1.0"), "node_id"),
            (hello("dp\u{202e}", "0.1.0"), "node_id"),
            (hello("dp-0", &"v".repeat(3 << 20)), "version"),
            (hello("dp-0", "1.0\u{1b}[2J"), "version"),
        ] {
            let status = check_hello(&bad).expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{status:?}");
            assert!(status.message().len() < 120, "the message does not repeat the field: {status:?}");
        }
    }

    #[test]
    fn nack_errors_are_escaped_and_truncated() {
        assert_eq!(nack_error("bad credential"), "bad credential");
        assert_eq!(nack_error("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let kept = nack_error(&"e".repeat(3 << 20));
        assert!(kept.len() < MAX_NACK_ERROR_BYTES + 64, "{}", kept.len());
        assert!(kept.ends_with("[truncated from 3145728 bytes]"), "{kept}");
        let escaped_long = nack_error(&"\u{1b}".repeat(1000));
        assert!(escaped_long.len() < MAX_NACK_ERROR_BYTES + 64 && !escaped_long.contains('\u{1b}'));
    }
}
