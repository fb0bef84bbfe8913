//! The gRPC port against a hostile client speaking raw HTTP/2: the bounds hold.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use prost::Message;
use tokio::io::AsyncReadExt;

use super::*;
use crate::config::Config;

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// A control plane with `limits`, served until the test ends.
async fn serve(limits: GrpcLimits) -> (SocketAddr, Arc<crate::metrics::Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cp.db").display());
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), url, "node-token");
    config.grpc_limits = limits;
    let control_plane = crate::server::start(config).await.unwrap();
    let addr = control_plane.local_addr();
    let metrics = control_plane.metrics();
    tokio::spawn(control_plane.serve(std::future::pending()));
    (addr, metrics, dir)
}

/// An HTTP/2 connection whose driver runs in the background; aborting the handle closes it.
async fn connect(addr: SocketAddr) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client.ready().await.unwrap(), driver)
}

fn grpc_request(path: &str) -> Request<()> {
    Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// One length-prefixed gRPC message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(payload.len()).unwrap());
    frame.put_slice(&payload);
    frame.freeze()
}

/// The `grpc-status` of a response, from its headers (trailers-only) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> String {
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    trailers["grpc-status"].to_str().unwrap().to_owned()
}

fn health_check(service: &str) -> tonic_health::pb::HealthCheckRequest {
    tonic_health::pb::HealthCheckRequest { service: service.into() }
}

#[tokio::test]
async fn the_server_advertises_its_stream_limit() {
    let limits = GrpcLimits { max_streams_per_connection: 7, ..GrpcLimits::default() };
    let (addr, _metrics, _dir) = serve(limits).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connection.max_concurrent_send_streams() != 7 {
        assert!(tokio::time::Instant::now() < deadline, "SETTINGS_MAX_CONCURRENT_STREAMS never arrived");
        let _ = tokio::time::timeout(Duration::from_millis(20), &mut connection).await;
    }
}

#[tokio::test]
async fn a_silent_stream_is_failed_once_the_request_timeout_passes() {
    let limits = GrpcLimits { request_timeout: Duration::from_millis(300), ..GrpcLimits::default() };
    let (addr, _metrics, _dir) = serve(limits).await;
    let (mut client, _driver) = connect(addr).await;
    // Headers, then nothing: no message, no end of stream.
    let (silent, _body) = client.send_request(grpc_request(CHECK), false).unwrap();
    assert_eq!(grpc_status(silent).await, "4", "DEADLINE_EXCEEDED");

    // A request that arrives in time is answered as before, on the same connection.
    let mut client = client.ready().await.unwrap();
    let (answered, mut body) = client.send_request(grpc_request(CHECK), false).unwrap();
    body.send_data(grpc_frame(&health_check("")), true).unwrap();
    assert_eq!(grpc_status(answered).await, "0");
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_before_it_is_buffered_whole() {
    let (addr, _metrics, _dir) = serve(GrpcLimits::default()).await;
    let (mut client, _driver) = connect(addr).await;
    let (response, mut body) = client.send_request(grpc_request(CHECK), false).unwrap();
    body.send_data(grpc_frame(&health_check(&"x".repeat(PROBE_MAX_MESSAGE + 1))), true).unwrap();
    // tonic's code for a message over the decoding limit.
    assert_eq!(grpc_status(response).await, "11", "OUT_OF_RANGE");
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_the_open_ones_keep_working() {
    let limits = GrpcLimits { max_connections: 2, ..GrpcLimits::default() };
    let (addr, metrics, _dir) = serve(limits).await;
    let (first, first_driver) = connect(addr).await;
    let (_second, second_driver) = connect(addr).await;

    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "the third connection must be closed: {read:?}");
    assert_eq!(metrics.connections.refused.get(), 1);
    assert_eq!(metrics.connections.open.get(), 2);

    let mut first = first.ready().await.unwrap();
    let (response, mut body) = first.send_request(grpc_request(CHECK), false).unwrap();
    body.send_data(grpc_frame(&health_check("")), true).unwrap();
    assert_eq!(grpc_status(response).await, "0", "an open connection is still served");

    // A slot frees when a connection closes.
    first_driver.abort();
    second_driver.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.connections.open.get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "connections never released their slots");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut again, _driver) = connect(addr).await;
    let (response, mut body) = again.send_request(grpc_request(CHECK), false).unwrap();
    body.send_data(grpc_frame(&health_check("")), true).unwrap();
    assert_eq!(grpc_status(response).await, "0");
}

#[test]
fn defaults_match_the_flags() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: GrpcLimits,
    }
    let parsed = Cli::try_parse_from(["x"]).unwrap().limits;
    let default = GrpcLimits::default();
    assert_eq!(
        (parsed.max_connections, parsed.max_streams_per_connection, parsed.request_timeout),
        (default.max_connections, default.max_streams_per_connection, default.request_timeout)
    );
}
