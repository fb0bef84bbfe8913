//! Speaking the config stream by hand, as a replica would, to test the control plane's side.

use aurora_proto::v1::config_service_client::ConfigServiceClient;
use aurora_proto::v1::{Hello, SubscribeRequest, SubscribeResponse, subscribe_request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::controlplane::{NODE_TOKEN, TestControlplane};

/// Opens a config stream to `cp` with the test node token and sends `hello`; returns the
/// outbound half and the inbound stream, or the status the control plane refused it with.
pub async fn subscribe(
    cp: &TestControlplane,
    hello: Hello,
) -> Result<(mpsc::Sender<SubscribeRequest>, Streaming<SubscribeResponse>), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(cp.url()).unwrap().connect().await.unwrap();
    let token: tonic::metadata::AsciiMetadataValue = format!("Bearer {NODE_TOKEN}").parse().unwrap();
    let mut client = ConfigServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", token.clone());
        Ok(request)
    });
    let (outbound, receiver) = mpsc::channel(16);
    outbound.send(SubscribeRequest { message: Some(subscribe_request::Message::Hello(hello)) }).await.unwrap();
    let inbound = client.subscribe(ReceiverStream::new(receiver)).await?.into_inner();
    Ok((outbound, inbound))
}
