//! Compiles `proto/aurora/v1/*.proto` with protox, a pure-Rust protobuf compiler, so building
//! Aurora never needs a system `protoc`. The encoded descriptor set is kept for gRPC reflection.
//!
//! `ConfigService`'s server is generated a second time, into `encoded/`, with `SubscribeResponse`
//! mapped to [`PreEncoded`](crate::PreEncoded): the control plane encodes each change once and
//! hands the same bytes to every replica's stream.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &["aurora/v1/admin.proto", "aurora/v1/config.proto"];

/// Messages that carry a secret (an upstream credential, a new key's secret): prost must not
/// derive their `Debug`, which would print it; `src/redacted_debug.rs` hand-writes one instead.
const SECRET_MESSAGES: &[&str] = &[
    ".aurora.v1.ProviderConfig",
    ".aurora.v1.UpsertProviderRequest",
    ".aurora.v1.CreateKeyResponse",
    ".aurora.v1.RotateKeyResponse",
    ".aurora.v1.ClientCertificate",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("aurora_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().skip_debug(SECRET_MESSAGES).compile_fds(descriptors.clone())?;

    let mut config_only = descriptors;
    config_only.file.retain(|file| file.name() == "aurora/v1/config.proto");
    let encoded_dir = out_dir.join("encoded");
    std::fs::create_dir_all(&encoded_dir)?;
    // This pass maps every message to `crate::v1`, so it generates none of them; skip_debug is
    // repeated only so that a message generated here later cannot bring the derive back.
    tonic_prost_build::configure()
        .skip_debug(SECRET_MESSAGES)
        .build_client(false)
        .out_dir(encoded_dir)
        .extern_path(".aurora.v1", "crate::v1")
        .extern_path(".aurora.v1.SubscribeResponse", "crate::PreEncoded")
        .compile_fds(config_only)?;
    Ok(())
}
