//! Usage metering end to end: the official SDKs through a data plane whose upstream declares
//! usage (JSON, event streams, gzip), a stream the client abandons, and hostile bodies. The
//! access-log line of each request must carry exactly the tokens the upstream declared.

mod compatible;

use std::io::Write;

use aurora_core::{AuthStyle, ProviderKind};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::sdk::run_script_at;
use crate::support::dataplane::{TestDataplane, base_path, key_entry, snapshot_for, upstream_credential};
use crate::support::raw_http::{Behaviour, HeldUpstream};
use crate::support::wait;

const KEY: &str = "aur_usageTestKey00000000000000000000000000000";

const ANTHROPIC_JSON: &str = r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":2051,"cache_read_input_tokens":100,"output_tokens":503,"service_tier":"standard"}}"#;

const ANTHROPIC_SSE: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

const CHAT_JSON: &str = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant","content":"ok","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default"}"#;

const CHAT_SSE: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
    "data: [DONE]\n\n",
);

const RESPONSES_SSE: &str = concat!(
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"ok\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"ok\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
);

const EMBEDDINGS_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","embedding":[0.0023064255,-0.009327292],"index":0}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// Bytes that are neither JSON nor UTF-8, 2 MiB of them.
fn garbage() -> Vec<u8> {
    (0..2 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 | 0x80).collect()
}

/// Mounts `response` for `POST {base path of kind}{endpoint}` (see
/// `support::dataplane::base_path`), answering only a request that carries `kind`'s upstream
/// credential as `kind` sends it (so a request routed to another provider finds no mock) and,
/// with `body`, whose JSON body contains it (the stream flags of a streamed answer). Mounted
/// first, the streamed answer of an endpoint wins over its JSON one.
async fn mount(
    server: &MockServer,
    kind: ProviderKind,
    endpoint: &str,
    body: Option<Value>,
    response: ResponseTemplate,
) {
    let credential = upstream_credential(kind);
    let mock = Mock::given(method("POST")).and(path(format!("{}{endpoint}", base_path(kind))));
    let mock = match kind.auth_style() {
        AuthStyle::XApiKey => mock.and(header("x-api-key", credential.as_str())),
        AuthStyle::Bearer => mock.and(header("authorization", format!("Bearer {credential}").as_str())),
    };
    match body {
        Some(body) => mock.and(body_partial_json(body)).respond_with(response),
        None => mock.respond_with(response),
    }
    .mount(server)
    .await;
}

/// Every provider's upstream: Anthropic and OpenAI here, the OpenAI-shaped others in
/// [`compatible`]. The data plane must carry `support::dataplane::upstream_credential`.
pub(crate) async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    let sse = |body: &str| ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "text/event-stream");
    let json = |body: Vec<u8>| ResponseTemplate::new(200).set_body_raw(body, "application/json");
    let stream = || Some(json!({"stream": true}));
    let (anthropic, openai) = (ProviderKind::Anthropic, ProviderKind::OpenAi);
    mount(&server, anthropic, "/messages", stream(), sse(ANTHROPIC_SSE)).await;
    mount(&server, anthropic, "/messages", None, json(ANTHROPIC_JSON.into())).await;
    mount(&server, openai, "/chat/completions", stream(), sse(CHAT_SSE)).await;
    let compressed = json(gzip(CHAT_JSON.as_bytes())).insert_header("content-encoding", "gzip");
    mount(&server, openai, "/chat/completions", None, compressed).await;
    mount(&server, openai, "/responses", None, sse(RESPONSES_SSE)).await;
    mount(&server, openai, "/embeddings", None, json(EMBEDDINGS_JSON.into())).await;
    mount(&server, openai, "/garbage", None, json(garbage())).await;
    mount(&server, openai, "/garbage-stream", None, sse(&String::from_utf8_lossy(&garbage()))).await;
    compatible::mount_all(&server).await;
    server
}

async fn dataplane(upstream: &str, env: &[(&str, &str)]) -> TestDataplane {
    let mut snapshot = snapshot_for(upstream);
    snapshot["keys"] = json!([key_entry(KEY, json!({}))]);
    TestDataplane::start(&snapshot, env).await
}

fn access_events(dataplane: &TestDataplane) -> Vec<Value> {
    dataplane.process.events().into_iter().filter(|e| e["target"] == "aurora::access").collect()
}

/// Waits for `count` access-log events and returns them.
async fn wait_access(dataplane: &TestDataplane, count: usize) -> Vec<Value> {
    wait::until(&format!("{count} access-log lines"), || {
        let events = access_events(dataplane);
        (events.len() >= count).then_some(events)
    })
    .await
}

fn find<'a>(events: &'a [Value], path: &str, stream: bool) -> &'a Value {
    events
        .iter()
        .find(|e| e["path"] == path && e["stream"] == stream)
        .unwrap_or_else(|| panic!("no access line for {path} (stream {stream}): {events:#?}"))
}

#[tokio::test]
async fn the_access_log_counts_exactly_the_tokens_each_sdk_call_declared() {
    let upstream = upstream().await;
    let dataplane = dataplane(&upstream.uri(), &[]).await;
    run_script_at("usage_client.py", &format!("http://{}", dataplane.addr), KEY, &dataplane.process.logs());
    let events = wait_access(&dataplane, 13).await;

    let expect = |e: &Value, model: &str, input: u64, output: u64| {
        assert_eq!(e["usage"], "complete", "{e}");
        assert_eq!(e["model"], model, "{e}");
        assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(input), Some(output)), "{e}");
    };
    let messages = find(&events, "/p/anthropic/v1/messages", false);
    expect(messages, "claude-sonnet-4-5-20250929", 2095, 503);
    assert_eq!(messages["cache_read_input_tokens"], 100);
    assert_eq!(messages["cache_creation_input_tokens"], 2051);
    expect(find(&events, "/p/anthropic/v1/messages", true), "claude-sonnet-4-5-20250929", 25, 15);
    let chat = find(&events, "/p/openai/v1/chat/completions", false);
    expect(chat, "gpt-4.1-2025-04-14", 19, 10);
    assert_eq!(chat["cache_read_input_tokens"], 3, "gzip-compressed JSON is metered: {chat}");
    expect(find(&events, "/p/openai/v1/chat/completions", true), "gpt-4o-mini", 9, 12);
    expect(find(&events, "/p/openai/v1/responses", true), "gpt-4.1-2025-04-14", 37, 11);
    expect(find(&events, "/p/openai/v1/embeddings", false), "text-embedding-3-small", 8, 0);

    let cached = |e: &Value, tokens: u64| assert_eq!(e["cache_read_input_tokens"], tokens, "{e}");
    let router = find(&events, "/p/openrouter/v1/chat/completions", false);
    expect(router, "openai/gpt-5-mini", 1234, 345);
    cached(router, 1024);
    let router_stream = find(&events, "/p/openrouter/v1/chat/completions", true);
    expect(router_stream, "openai/gpt-5-mini", 611, 77);
    cached(router_stream, 512);
    let zai = find(&events, "/p/zai/chat/completions", false);
    expect(zai, "glm-4.6", 2718, 281);
    cached(zai, 1280);
    let zai_stream = find(&events, "/p/zai/chat/completions", true);
    expect(zai_stream, "glm-4.5-air", 314, 159);
    cached(zai_stream, 192);
    let llama = "meta-llama/Llama-3.1-8B-Instruct";
    expect(find(&events, "/p/vllm/v1/chat/completions", false), llama, 42, 17);
    expect(find(&events, "/p/vllm/v1/chat/completions", true), llama, 27, 5);
    expect(find(&events, "/p/vllm/v1/completions", false), llama, 6, 16);

    let metrics = reqwest::get(dataplane.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for series in [
        "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"input\"} 2120\n",
        "aurora_dataplane_usage_tokens_total{provider=\"anthropic\",direction=\"output\"} 518\n",
        "aurora_dataplane_usage_tokens_total{provider=\"openai\",direction=\"input\"} 73\n",
        "aurora_dataplane_usage_requests_total{provider=\"openai\",outcome=\"complete\"} 4\n",
        "aurora_dataplane_usage_tokens_total{provider=\"openrouter\",direction=\"input\"} 1845\n",
        "aurora_dataplane_usage_tokens_total{provider=\"zai\",direction=\"output\"} 440\n",
        "aurora_dataplane_usage_requests_total{provider=\"vllm\",outcome=\"complete\"} 3\n",
    ] {
        assert!(metrics.contains(series), "missing {series:?} in:\n{metrics}");
    }
}

#[tokio::test]
async fn with_metering_off_every_response_is_unknown() {
    let upstream = upstream().await;
    let dataplane = dataplane(&upstream.uri(), &[("AURORA_USAGE_METERING", "off")]).await;
    let response = reqwest::Client::new()
        .post(dataplane.url("/p/openai/v1/embeddings"))
        .bearer_auth(KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), EMBEDDINGS_JSON);
    let events = wait_access(&dataplane, 1).await;
    assert_eq!(events[0]["usage"], "unknown", "{}", events[0]);
    assert!(events[0].get("input_tokens").is_none(), "{}", events[0]);
}

#[tokio::test]
async fn a_stream_abandoned_half_way_logs_the_tokens_seen_so_far_as_incomplete() {
    let mut upstream = HeldUpstream::start(Behaviour::StreamThenHold).await;
    let dataplane = TestDataplane::start(&snapshot_for(&upstream.base_url()), &[]).await;
    let client = reqwest::Client::new();
    let (stream, _first) = dataplane.first_event(&client).await;
    drop(stream);
    upstream.wait_closed().await;
    let events = wait_access(&dataplane, 1).await;
    let line = &events[0];
    assert_eq!(line["outcome"], "client_gone", "{line}");
    assert_eq!(line["usage"], "incomplete", "{line}");
    assert_eq!(line["model"], "claude-haiku-4-5", "{line}");
    assert_eq!((line["input_tokens"].as_u64(), line["output_tokens"].as_u64()), (Some(25), Some(1)), "{line}");
}

#[tokio::test]
async fn garbage_bodies_are_forwarded_byte_for_byte_and_the_proxy_stays_healthy() {
    let upstream = upstream().await;
    let dataplane = dataplane(&upstream.uri(), &[]).await;
    let client = reqwest::Client::new();
    let expected = garbage();
    let body = client.post(dataplane.url("/p/openai/v1/garbage")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(body.bytes().await.unwrap().as_ref(), expected.as_slice());
    let lossy = String::from_utf8_lossy(&expected).into_owned();
    let body = client.post(dataplane.url("/p/openai/v1/garbage-stream")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(body.bytes().await.unwrap().as_ref(), lossy.as_bytes());

    let events = wait_access(&dataplane, 2).await;
    for line in &events {
        assert_eq!(line["usage"], "unknown", "{line}");
        assert_eq!(line["outcome"], "complete", "{line}");
    }
    // Still serving.
    let response = client.post(dataplane.url("/p/openai/v1/embeddings")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), EMBEDDINGS_JSON);
}
