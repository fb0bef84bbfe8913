//! Request ids: honour the client's `X-Request-ID` when it is sane, otherwise mint one.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::headers::X_REQUEST_ID;

const MAX_LEN: usize = 128;

/// The request id to log, forward upstream and return to the client.
pub fn for_request(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(value) if is_acceptable(value) => value.clone(),
        _ => generate(),
    }
}

/// Visible ASCII only and bounded, so an id can be logged and echoed without escaping.
fn is_acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

thread_local! {
    /// Request ids need to be unique, not unpredictable: a small generator per thread, seeded
    /// from the OS, costs a few instructions per id where the thread's cryptographic generator
    /// (uuid's `new_v4`) cost a ChaCha block.
    static IDS: std::cell::RefCell<SmallRng> = std::cell::RefCell::new(SmallRng::from_os_rng());
}

/// A random (version 4) UUID.
///
/// Its bytes are owned by the `Bytes` itself (`Bytes::from_owner`): one allocation, and every
/// clone (the exchange's, the upstream request's, the response's) a reference count. A value
/// copied from a slice is backed by a vector, whose first clone allocates again to share it.
fn generate() -> HeaderValue {
    let random: u128 = IDS.with(|ids| ids.borrow_mut().random());
    let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid().hyphenated().encode_lower(&mut id);
    HeaderValue::from_maybe_shared(Bytes::from_owner(id))
        .unwrap_or_else(|_| unreachable!("a UUID is a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(for_request(&headers), "abc-123");

        headers.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(for_request(&headers).len(), 36);
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(for_request(&headers).len(), 36);
        assert_ne!(for_request(&HeaderMap::new()), for_request(&HeaderMap::new()));
        let minted = uuid::Uuid::parse_str(for_request(&HeaderMap::new()).to_str().unwrap()).unwrap();
        assert_eq!(minted.get_version(), Some(uuid::Version::Random));
    }
}
