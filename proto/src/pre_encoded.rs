//! A message whose protobuf encoding was computed ahead of time.
//!
//! The control plane fans each configuration change out to every data-plane replica. Encoding
//! it once and sharing the bytes (`Bytes` is reference-counted) keeps CPU and memory flat as
//! replicas are added. Encoding a message is writing its fields, so writing the fields of an
//! already-encoded `SubscribeResponse` is the same as encoding the message itself.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// The wire encoding of a `SubscribeResponse`, sent as is. Encode-only: decoding skips fields.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PreEncoded(pub Bytes);

/// Only the length: snapshot chunks and provider deltas hold upstream credentials in plaintext.
impl std::fmt::Debug for PreEncoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreEncoded({} bytes)", self.0.len())
    }
}

impl PreEncoded {
    pub fn encode(message: &impl prost::Message) -> Self {
        PreEncoded(Bytes::from(message.encode_to_vec()))
    }
}

impl prost::Message for PreEncoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::{Heartbeat, SubscribeResponse, subscribe_response};

    #[test]
    fn encodes_exactly_like_the_message() {
        let message = SubscribeResponse {
            message: Some(subscribe_response::Message::Heartbeat(Heartbeat { head_revision: 42 })),
        };
        let pre = PreEncoded::encode(&message);
        assert_eq!(pre.encode_to_vec(), message.encode_to_vec());
        assert_eq!(SubscribeResponse::decode(pre.encode_to_vec().as_slice()).unwrap(), message);
    }

    #[test]
    fn debug_shows_the_length_never_the_bytes() {
        let pre = PreEncoded(Bytes::from_static(b"sk-ant-secret"));
        assert_eq!(format!("{pre:?}"), "PreEncoded(13 bytes)");
    }
}
