//! Aurora's gRPC contract, generated from `proto/aurora/v1/*.proto`.
//!
//! `AdminService` is the operator API of the control plane; `ConfigService` is the stream that
//! carries configuration to data-plane replicas. The `.proto` files are the source of truth;
//! this crate only compiles them.

mod pre_encoded;
mod redacted_debug;

pub use pre_encoded::PreEncoded;

#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("aurora.v1");
}

/// The `ConfigService` server whose responses are [`PreEncoded`] `SubscribeResponse` bytes.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod encoded {
    include!(concat!(env!("OUT_DIR"), "/encoded/aurora.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every Aurora proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("aurora_descriptor");
