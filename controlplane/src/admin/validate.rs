//! Validation of admin requests into domain values. Every error names the field it is about,
//! as `INVALID_ARGUMENT: name: must be 1 to 128 characters`, and repeats at most a short,
//! escaped prefix of what the client sent (see `aurora_core::text::excerpt`).
//!
//! The bounds here are documented in `docs/OPERATIONS.md` ("Limits").

use std::time::SystemTime;

use aurora_core::text::{excerpt, first_unsafe_char};
use aurora_core::{BaseUrl, DefaultHeader, DefaultHeaders, LATEST_EXPIRY, ProviderKind, ProviderSet};
use aurora_proto::v1 as pb;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use uuid::Uuid;

use crate::store::{ClientIdentity, Credential};

pub(crate) const NAME_MAX_CHARS: usize = 128;
pub(crate) const DESCRIPTION_MAX_CHARS: usize = 1024;
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;
/// Largest PEM document accepted (a certificate chain, a key or a CA bundle).
pub(crate) const MAX_PEM_BYTES: usize = 64 * 1024;

/// An invalid request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct FieldError {
    pub(crate) field: &'static str,
    pub(crate) message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

pub(crate) fn key_id(raw: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(raw.trim()).map_err(|_| invalid("id", format!("{} is not a key id (a UUID)", excerpt(raw))))
}

/// Stored text that people read in terminals and logs must not be able to rewrite them.
fn printable(field: &'static str, text: &str) -> Result<(), FieldError> {
    match first_unsafe_char(text) {
        Some(c) => Err(invalid(
            field,
            format!(
                "must not contain control, bidi-override or line-separator characters (found U+{:04X})",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

pub(crate) fn name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_MAX_CHARS {
        return Err(invalid("name", format!("must be 1 to {NAME_MAX_CHARS} characters")));
    }
    printable("name", name)?;
    Ok(name.to_owned())
}

pub(crate) fn description(raw: &str) -> Result<String, FieldError> {
    if raw.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(invalid("description", format!("must be at most {DESCRIPTION_MAX_CHARS} characters")));
    }
    printable("description", raw)?;
    Ok(raw.to_owned())
}

/// An expiry, which must lie in the future and no later than the last second of year 9999:
/// later instants have no RFC 3339 form, so no tool could show them.
pub(crate) fn expires_at(timestamp: &prost_types::Timestamp, now: SystemTime) -> Result<SystemTime, FieldError> {
    let out_of_range = || invalid("expires_at", format!("must be in the future and no later than {LATEST_EXPIRY}"));
    if timestamp.seconds > aurora_core::LATEST_EXPIRY_UNIX_SECS {
        return Err(out_of_range());
    }
    let time = SystemTime::try_from(*timestamp).map_err(|_| invalid("expires_at", "not a valid timestamp"))?;
    if time <= now || time > aurora_core::latest_expiry() {
        return Err(out_of_range());
    }
    // The store keeps milliseconds; truncate now so the response equals later reads.
    Ok(crate::time::from_millis(crate::time::to_millis(time)))
}

/// A provider list; empty means every provider.
pub(crate) fn providers(field: &'static str, names: &[String]) -> Result<ProviderSet, FieldError> {
    names.iter().map(|name| provider(field, name)).collect()
}

pub(crate) fn provider(field: &'static str, name: &str) -> Result<ProviderKind, FieldError> {
    name.trim().parse().map_err(|err: aurora_core::UnknownProvider| invalid(field, err.to_string()))
}

pub(crate) fn base_url(raw: &str) -> Result<BaseUrl, FieldError> {
    BaseUrl::parse(raw).map_err(|err| invalid("base_url", err.to_string()))
}

/// An upstream credential: it goes into an HTTP header, so printable ASCII only. The error
/// never repeats the value.
pub(crate) fn credential(raw: &str) -> Result<Credential, FieldError> {
    aurora_core::validate_credential(raw).map(Credential::new).map_err(|err| invalid("credential", err.to_string()))
}

pub(crate) fn page_size(raw: u32) -> Result<u32, FieldError> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(invalid("page_size", format!("must be at most {MAX_PAGE_SIZE}"))),
        n => Ok(n),
    }
}

/// `WaitForRevision`'s revision must be committed, and its timeout bounded.
pub(crate) fn wait(revision: u64, head: u64, timeout_ms: u32) -> Result<std::time::Duration, FieldError> {
    const DEFAULT: u32 = 10_000;
    const MAX: u32 = 300_000;
    if revision > head {
        return Err(invalid("revision", format!("{revision} has not been committed (the head revision is {head})")));
    }
    match timeout_ms {
        0 => Ok(std::time::Duration::from_millis(DEFAULT.into())),
        ms if ms > MAX => Err(invalid("timeout_ms", format!("must be at most {MAX}"))),
        ms => Ok(std::time::Duration::from_millis(ms.into())),
    }
}

/// Page tokens are the hex of the last key id returned: opaque to clients, stable for us.
pub(crate) fn page_token(raw: &str) -> Result<Option<Uuid>, FieldError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(raw, &mut bytes).map_err(|_| invalid("page_token", "not a token from a previous response"))?;
    Ok(Some(Uuid::from_bytes(bytes)))
}

pub(crate) fn next_page_token(last: Uuid) -> String {
    hex::encode(last.as_bytes())
}

/// A `ListDataPlanes` position: the last replica's node id and registration id.
pub(crate) type DataPlaneCursor = (String, u64);

/// Data-plane page tokens are the hex of the last replica's registration id (8 bytes, big
/// endian) followed by its node id.
pub(crate) fn data_plane_page_token(raw: &str) -> Result<Option<DataPlaneCursor>, FieldError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "not a token from a previous response");
    if raw.len() > 2 * (8 + crate::config_stream::limits::MAX_NODE_ID_BYTES) {
        return Err(bad());
    }
    let bytes = hex::decode(raw).map_err(|_| bad())?;
    let (id, node_id) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
    let node_id = String::from_utf8(node_id.to_vec()).map_err(|_| bad())?;
    Ok(Some((node_id, u64::from_be_bytes(*id))))
}

pub(crate) fn next_data_plane_page_token(node_id: &str, id: u64) -> String {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend_from_slice(node_id.as_bytes());
    hex::encode(bytes)
}

/// A provider's default headers, each checked by the rules both planes share.
pub(crate) fn default_headers(list: &pb::HeaderList) -> Result<DefaultHeaders, FieldError> {
    let headers = list
        .headers
        .iter()
        .map(|h| DefaultHeader::new(&h.name, &h.value))
        .collect::<Result<Vec<_>, _>>()
        .and_then(DefaultHeaders::new)
        .map_err(|err| invalid("default_headers", err.to_string()))?;
    Ok(headers)
}

fn certificates(field: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, FieldError> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(invalid(field, format!("must be at most {MAX_PEM_BYTES} bytes")));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(field, "is not a valid PEM certificate list"))?;
    if certs.is_empty() {
        return Err(invalid(field, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A client certificate chain and its key: both PEM, and the key must be the certificate's.
pub(crate) fn client_certificate(certificate: &pb::ClientCertificate) -> Result<ClientIdentity, FieldError> {
    let chain = certificates("client_certificate.certificate_pem", &certificate.certificate_pem)?;
    let key_field = "client_certificate.private_key_pem";
    if certificate.private_key_pem.len() > MAX_PEM_BYTES {
        return Err(invalid(key_field, format!("must be at most {MAX_PEM_BYTES} bytes")));
    }
    // Never repeats the key, nor rustls's reason (which might quote it).
    let key = PrivateKeyDer::from_pem_slice(certificate.private_key_pem.as_bytes())
        .map_err(|_| invalid(key_field, "is not a PEM private key"))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(|_| {
        invalid(key_field, "is not a supported key for the certificate (it must be the certificate's own)")
    })?;
    Ok(ClientIdentity::new(certificate.certificate_pem.clone(), certificate.private_key_pem.clone()))
}

/// A provider CA bundle: at least one PEM certificate.
pub(crate) fn ca_pem(pem: &str) -> Result<String, FieldError> {
    certificates("ca_pem", pem)?;
    Ok(pem.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_are_bounded_and_errors_name_the_field() {
        assert_eq!(name("  ci  ").as_deref(), Ok("ci"));
        assert_eq!(name("").map_err(|e| e.to_string()), Err("name: must be 1 to 128 characters".to_owned()));
        assert!(name(&"x".repeat(129)).is_err());
        assert!(name(&"é".repeat(128)).is_ok());
        assert!(name("a\nb").is_err());
    }

    /// Names and descriptions reach terminals and logs: no controls, bidi overrides or
    /// separators, and the error says which character it found.
    #[test]
    fn stored_text_refuses_terminal_tricks() {
        for bad in ["evil\u{202e}gpj.exe", "a\u{2028}b", "a\u{2029}b", "a\u{2066}b", "a\u{1b}[2Jb", "a\u{9b}b", "a\rb"]
        {
            let err = name(bad).expect_err(bad);
            assert_eq!(err.field, "name");
            assert!(err.message.contains("U+"), "{err}");
            assert_eq!(description(bad).map_err(|e| e.field), Err("description"));
        }
        assert_eq!(name("évé 日本 ok").as_deref(), Ok("évé 日本 ok"));
        assert!(description("plain text, with punctuation!").is_ok());
    }

    /// A 100 KB id must not come back in the status message (it would not fit the client's
    /// metadata limit, turning INVALID_ARGUMENT into RESOURCE_EXHAUSTED).
    #[test]
    fn bad_ids_are_echoed_as_a_short_prefix_only() {
        let err = key_id(&"x".repeat(100_000)).expect_err("not a UUID").to_string();
        assert!(err.len() < 100, "{err}");
        assert!(err.starts_with("id: \"xxxx"), "{err}");
        let err = providers("allowed_providers", &["\u{1b}]0;pwned\u{7}".repeat(1000)]).expect_err("unknown");
        assert!(err.to_string().len() < 200 && !err.to_string().contains('\u{1b}'), "{err}");
    }

    #[test]
    fn expiry_must_be_in_the_future() {
        let now = SystemTime::now();
        let past = prost_types::Timestamp::from(now - Duration::from_secs(1));
        let future = prost_types::Timestamp::from(now + Duration::from_secs(60));
        assert_eq!(expires_at(&past, now).map_err(|e| e.field), Err("expires_at"));
        assert!(expires_at(&future, now).is_ok());
    }

    /// Year 10000 used to be stored, and then broke every `aurora keys list`.
    #[test]
    fn expiry_is_at_most_the_last_second_of_9999() {
        let now = SystemTime::now();
        let latest = prost_types::Timestamp { seconds: 253_402_300_799, nanos: 0 };
        assert!(expires_at(&latest, now).is_ok());
        for seconds in [253_402_300_800, 253_402_300_800 * 2, i64::MAX] {
            let err = expires_at(&prost_types::Timestamp { seconds, nanos: 0 }, now).expect_err("too late");
            assert_eq!(err.to_string(), "expires_at: must be in the future and no later than 9999-12-31T23:59:59Z");
        }
    }

    #[test]
    fn unknown_providers_list_the_known_ones() {
        let err = providers("allowed_providers", &["openai".into(), "gemini".into()]).expect_err("unknown");
        assert_eq!(err.field, "allowed_providers");
        assert!(err.message.contains("known providers: openai, anthropic, openrouter, zai, vllm"), "{err}");
    }

    #[test]
    fn credentials_are_header_safe_and_never_echoed() {
        assert!(credential("sk-abc").is_ok());
        let err = credential("sk-\u{7}secret").expect_err("control character");
        assert!(!err.to_string().contains("secret"));
        assert!(credential("   ").is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_sizes_are_bounded() {
        let id = Uuid::now_v7();
        assert_eq!(page_token(&next_page_token(id)), Ok(Some(id)));
        assert_eq!(page_token(""), Ok(None));
        assert!(page_token("zz").is_err());
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000), Ok(1000));
        assert!(page_size(1001).is_err());
    }

    #[test]
    fn data_plane_page_tokens_round_trip_and_garbage_is_refused() {
        let token = next_data_plane_page_token("dp-é", 42);
        assert_eq!(data_plane_page_token(&token), Ok(Some(("dp-é".to_owned(), 42))));
        assert_eq!(data_plane_page_token(""), Ok(None));
        for bad in ["zz", "00", &"0".repeat(10_000), "00000000000000ffff"] {
            assert_eq!(data_plane_page_token(bad).map_err(|e| e.field), Err("page_token"), "{bad}");
        }
    }
}
