//! Metering tests: realistic provider bodies (the shapes the providers document), split at
//! every frame boundary, compressed, cut short, and hostile.

mod compatible;

use std::io::Write;
use std::sync::{Arc, Mutex};

use aurora_core::ProviderKind;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::usage::{TokenCounts, Usage, UsageOutcome, UsageSink};

#[derive(Debug, Default)]
struct Recorded(Mutex<Vec<(ProviderKind, Usage)>>);

impl UsageSink for Recorded {
    fn record(&self, _: Principal, provider: ProviderKind, usage: &Usage) {
        self.0.lock().unwrap().push((provider, usage.clone()));
    }
}

fn headers(content_type: &str, encoding: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    if let Some(encoding) = encoding {
        headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
    }
    headers
}

/// Meters `frames` as one response and returns the one usage the sink received.
fn meter_with(enabled: bool, headers: &HeaderMap, frames: &[&[u8]], completed: bool) -> Usage {
    let sink = Arc::new(Recorded::default());
    let metering = Metering::new(enabled);
    let mut meter = metering.start(StatusCode::OK, headers, None);
    for frame in frames {
        meter.sent(&bytes::Bytes::copy_from_slice(frame));
    }
    let usage = meter.end(completed, Principal::Anonymous, ProviderKind::OpenAi, &*sink);
    let recorded = sink.0.lock().unwrap();
    assert_eq!(recorded.len(), 1, "exactly one usage per response");
    assert_eq!(recorded[0].1, usage);
    usage
}

fn meter(headers: &HeaderMap, frames: &[&[u8]], completed: bool) -> Usage {
    meter_with(true, headers, frames, completed)
}

/// Meters `body` split into two frames at every possible point (and as one frame), expecting
/// the same usage each time.
fn every_split(headers: &HeaderMap, body: &[u8]) -> Usage {
    let whole = meter(headers, &[body], true);
    for at in 0..=body.len() {
        let (a, b) = body.split_at(at);
        assert_eq!(meter(headers, &[a, b], true), whole, "split at {at}");
    }
    // And byte by byte.
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(meter(headers, &bytes, true), whole, "byte by byte");
    whole
}

fn json() -> HeaderMap {
    headers("application/json", None)
}

fn sse() -> HeaderMap {
    headers("text/event-stream; charset=utf-8", None)
}

fn complete(model: &str, tokens: TokenCounts) -> Usage {
    Usage { model: Some(model.into()), tokens, outcome: UsageOutcome::Complete }
}

const ANTHROPIC_JSON: &str = r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! My name is Claude. \"usage\": {\"input_tokens\": 999}"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":2051,"cache_read_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":2051,"ephemeral_1h_input_tokens":0},"output_tokens":503,"service_tier":"standard"}}"#;

const ANTHROPIC_SSE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-opus-4-1-20250805\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":12,\"output_tokens\":1}}}\n\
\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\
\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\
\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}\n\
\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\
\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\
\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\
\n";

const OPENAI_CHAT_JSON: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default"
}"#;

const OPENAI_CHAT_SSE: &str = "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\
\r\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\
\r\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\
\r\n\
data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\r\n\
\r\n\
data: [DONE]\r\n\
\r\n";

const RESPONSES_JSON: &str = r#"{"id":"resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b","object":"response","created_at":1741476542,"status":"completed","error":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon...","annotations":[]}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":6},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":123},"user":null,"metadata":{}}"#;

const RESPONSES_SSE: &str = "event: response.created\n\
data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\
\n\
event: response.output_text.delta\n\
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\
\n\
event: response.completed\n\
data: {\"type\":\"response.completed\",\"sequence_number\":9,\"response\":{\"id\":\"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there!\"}]}],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\
\n";

const EMBEDDINGS_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","embedding":[0.0023064255,-0.009327292,-0.0028842222],"index":0}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;

#[test]
fn anthropic_json_reads_every_count_and_ignores_usage_inside_the_text() {
    let usage = every_split(&json(), ANTHROPIC_JSON.as_bytes());
    let tokens =
        TokenCounts { input: 2095, output: 503, cache_read_input: 100, cache_creation_input: 2051, reasoning: 0 };
    assert_eq!(usage, complete("claude-sonnet-4-5-20250929", tokens));
}

#[test]
fn a_model_name_with_escapes_is_read_unescaped() {
    // serde hands over a borrowed string when the name has nothing to undo, an owned one
    // when it has: both paths must give the same name, and the usage beside it.
    let body = br#"{"model":"claude-\u0073onnet\/4","usage":{"input_tokens":3,"output_tokens":4}}"#;
    let tokens = TokenCounts { input: 3, output: 4, ..TokenCounts::default() };
    assert_eq!(every_split(&json(), body), complete("claude-sonnet/4", tokens));
}

#[test]
fn anthropic_stream_takes_input_from_message_start_and_output_from_message_delta() {
    let usage = every_split(&sse(), ANTHROPIC_SSE.as_bytes());
    let tokens = TokenCounts { input: 25, output: 15, cache_read_input: 12, ..TokenCounts::default() };
    assert_eq!(usage, complete("claude-opus-4-1-20250805", tokens));
}

#[test]
fn openai_chat_json_reads_cached_and_reasoning_details() {
    let usage = every_split(&json(), OPENAI_CHAT_JSON.as_bytes());
    let tokens = TokenCounts { input: 19, output: 10, cache_read_input: 3, reasoning: 4, ..TokenCounts::default() };
    assert_eq!(usage, complete("gpt-4.1-2025-04-14", tokens));
}

#[test]
fn openai_chat_stream_reads_the_final_usage_chunk_with_crlf_lines() {
    let usage = every_split(&sse(), OPENAI_CHAT_SSE.as_bytes());
    assert_eq!(usage, complete("gpt-4o-mini", TokenCounts { input: 9, output: 12, ..TokenCounts::default() }));
}

#[test]
fn openai_chat_stream_without_include_usage_is_unknown_with_its_model() {
    let body: String =
        OPENAI_CHAT_SSE.split("\r\n\r\n").filter(|e| !e.contains("\"usage\":{")).collect::<Vec<_>>().join("\r\n\r\n");
    let usage = meter(&sse(), &[body.as_bytes()], true);
    assert_eq!(usage.outcome, UsageOutcome::Unknown);
    assert_eq!(usage.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(usage.tokens, TokenCounts::default());
}

#[test]
fn responses_api_json_and_stream() {
    let usage = every_split(&json(), RESPONSES_JSON.as_bytes());
    let tokens = TokenCounts { input: 36, output: 87, cache_read_input: 6, reasoning: 20, ..TokenCounts::default() };
    assert_eq!(usage, complete("gpt-4.1-2025-04-14", tokens));
    let usage = every_split(&sse(), RESPONSES_SSE.as_bytes());
    assert_eq!(usage, complete("gpt-4.1-2025-04-14", TokenCounts { input: 37, output: 11, ..TokenCounts::default() }));
}

#[test]
fn embeddings_count_prompt_tokens() {
    let usage = every_split(&json(), EMBEDDINGS_JSON.as_bytes());
    assert_eq!(usage, complete("text-embedding-3-small", TokenCounts { input: 8, ..TokenCounts::default() }));
}

#[test]
fn a_stream_cut_after_message_start_keeps_the_input_and_is_incomplete() {
    let cut = ANTHROPIC_SSE.find("event: message_delta").unwrap();
    let usage = meter(&sse(), &[&ANTHROPIC_SSE.as_bytes()[..cut]], false);
    assert_eq!(usage.outcome, UsageOutcome::Incomplete);
    assert_eq!(usage.tokens.input, 25);
    assert_eq!(usage.tokens.output, 1);
    // Cut even though the body "ended": without message_delta the usage is not final.
    assert_eq!(meter(&sse(), &[&ANTHROPIC_SSE.as_bytes()[..cut]], true).outcome, UsageOutcome::Incomplete);
    // The whole stream, but the client left before the end was confirmed.
    assert_eq!(meter(&sse(), &[ANTHROPIC_SSE.as_bytes()], false).outcome, UsageOutcome::Incomplete);
}

#[test]
fn a_truncated_json_body_is_incomplete_or_unknown() {
    let cut = OPENAI_CHAT_JSON.find("\"service_tier\"").unwrap();
    let usage = meter(&json(), &[&OPENAI_CHAT_JSON.as_bytes()[..cut]], false);
    assert_eq!(usage.outcome, UsageOutcome::Incomplete);
    assert_eq!(usage.tokens.input, 19);
    let cut = OPENAI_CHAT_JSON.find("\"usage\"").unwrap();
    assert_eq!(meter(&json(), &[&OPENAI_CHAT_JSON.as_bytes()[..cut]], false).outcome, UsageOutcome::Unknown);
}

#[test]
fn compressed_bodies_are_decoded_for_the_scanner() {
    let body = OPENAI_CHAT_JSON.as_bytes();
    let expected = meter(&json(), &[body], true);

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(body).unwrap();
    let gzip = gzip.finish().unwrap();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(body).unwrap();
    let zlib = zlib.finish().unwrap();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    raw.write_all(body).unwrap();
    let raw = raw.finish().unwrap();
    let zstd = ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest);

    for (encoding, encoded) in [("gzip", &gzip), ("deflate", &zlib), ("deflate", &raw), ("zstd", &zstd)] {
        let headers = headers("application/json", Some(encoding));
        for at in 0..=encoded.len() {
            let (a, b) = encoded.split_at(at);
            assert_eq!(meter(&headers, &[a, b], true), expected, "{encoding} split at {at}");
        }
    }
}

#[test]
fn a_brotli_stream_is_decoded() {
    // A brotli stream of the event stream, made by the `brotli` CLI's format: a metadata-free
    // stream with one uncompressed meta-block per 64 KiB is valid brotli (RFC 7932 §9.2).
    let body = ANTHROPIC_SSE.as_bytes();
    let encoded = brotli_uncompressed(body);
    let headers = headers("text/event-stream", Some("br"));
    let expected = meter(&sse(), &[body], true);
    for at in (0..=encoded.len()).step_by(7) {
        let (a, b) = encoded.split_at(at);
        assert_eq!(meter(&headers, &[a, b], true), expected, "split at {at}");
    }
}

/// Encodes `data` as brotli with uncompressed meta-blocks (no encoder crate needed): WBITS=16
/// header, then per block ISLAST=0, MNIBBLES=4, MLEN-1, ISUNCOMPRESSED=1, byte-aligned data,
/// then an empty last meta-block.
fn brotli_uncompressed(data: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, bits: u32) {
            self.acc |= value << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn align(&mut self) {
            if self.n > 0 {
                self.put(0, 8 - self.n);
            }
        }
    }
    let mut bits = Bits { out: Vec::new(), acc: 0, n: 0 };
    bits.put(0, 1); // WBITS = 16
    for block in data.chunks(65536) {
        bits.put(0, 1); // ISLAST
        bits.put(0, 2); // MNIBBLES = 4
        bits.put(block.len() as u64 - 1, 16);
        bits.put(1, 1); // ISUNCOMPRESSED
        bits.align();
        bits.out.extend_from_slice(block);
    }
    bits.put(1, 1); // ISLAST
    bits.put(1, 1); // ISLASTEMPTY
    bits.align();
    bits.out
}

#[test]
fn a_corrupt_compressed_body_is_unknown() {
    let headers = headers("application/json", Some("gzip"));
    let usage = meter(&headers, &[OPENAI_CHAT_JSON.as_bytes()], true);
    assert_eq!(usage.outcome, UsageOutcome::Unknown);
    let unsupported = headers_with("application/json", "compress");
    assert_eq!(meter(&unsupported, &[OPENAI_CHAT_JSON.as_bytes()], true).outcome, UsageOutcome::Unknown);
}

fn headers_with(content_type: &str, encoding: &str) -> HeaderMap {
    headers(content_type, Some(encoding))
}

#[test]
fn a_decompression_bomb_is_cut() {
    // 100 MiB of spaces before the JSON: compresses to ~100 KiB, decodes past the budget.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let spaces = vec![b' '; 1024 * 1024];
    for _ in 0..100 {
        gzip.write_all(&spaces).unwrap();
    }
    gzip.write_all(OPENAI_CHAT_JSON.as_bytes()).unwrap();
    let bomb = gzip.finish().unwrap();
    let headers = headers("application/json", Some("gzip"));
    let frames: Vec<&[u8]> = bomb.chunks(16 * 1024).collect();
    assert_eq!(meter(&headers, &frames, true).outcome, UsageOutcome::Unknown);
}

#[test]
fn garbage_non_utf8_and_wrong_formats_are_unknown() {
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for headers in [json(), sse(), headers("text/plain", None), headers("application/octet-stream", None)] {
        let usage = meter(&headers, &[&garbage], true);
        assert_eq!(usage, Usage { model: None, tokens: TokenCounts::default(), outcome: UsageOutcome::Unknown });
    }
    // Not UTF-8 inside an otherwise good event: that event is skipped, the stream still read.
    let bad = ANTHROPIC_SSE.replace("Hello", "\u{0}").into_bytes();
    let mut bad = bad;
    let at = bad.iter().position(|&b| b == 0).unwrap();
    bad[at] = 0xff;
    assert_eq!(meter(&sse(), &[&bad], true).outcome, UsageOutcome::Complete);
    // A count that is not a non-negative integer: the body's usage is not trusted.
    let negative = OPENAI_CHAT_JSON.replace("\"prompt_tokens\": 19", "\"prompt_tokens\": -19");
    assert_eq!(meter(&json(), &[negative.as_bytes()], true).outcome, UsageOutcome::Unknown);
    // No usage at all, and an error status.
    assert_eq!(meter(&json(), &[b"{\"ok\":true}"], true).outcome, UsageOutcome::Unknown);
    let sink = Arc::new(Recorded::default());
    let mut meter = Metering::new(true).start(StatusCode::TOO_MANY_REQUESTS, &json(), None);
    meter.feed(OPENAI_CHAT_JSON.as_bytes());
    assert_eq!(meter.end(true, Principal::Anonymous, ProviderKind::OpenAi, &*sink).outcome, UsageOutcome::Unknown);
}

#[test]
fn enormous_bodies_stay_bounded() {
    // A JSON string past the scalar cap: the scanner gives up rather than holding it.
    let mut frames: Vec<Vec<u8>> = vec![b"{\"model\":\"m\",\"text\":\"".to_vec()];
    frames.extend(std::iter::repeat_n(vec![b'a'; 64 * 1024], json::MAX_SCALAR_BYTES / (64 * 1024) + 2));
    frames.push(b"\",\"usage\":{\"prompt_tokens\":1}}".to_vec());
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(meter(&json(), &refs, true).outcome, UsageOutcome::Unknown);

    // An event past the cap is skipped whole; the events after it are still read.
    let mut stream = b"data: {\"model\":\"m\",\"text\":\"".to_vec();
    stream.extend(std::iter::repeat_n(b'a', sse::MAX_EVENT_BYTES + 1));
    stream.extend_from_slice(b"\"}\n\n");
    let mut scanner = SseScanner::default();
    scanner.feed(&stream);
    assert!(scanner_buffer(&scanner) <= sse::MAX_EVENT_BYTES);
    scanner.feed(OPENAI_CHAT_SSE.as_bytes());
    let seen = scanner.finish();
    assert_eq!(seen.reported.prompt_tokens, Some(9));

    // Deep nesting past the parser's limit.
    let deep = "[".repeat(10_000);
    assert_eq!(meter(&json(), &[deep.as_bytes()], true).outcome, UsageOutcome::Unknown);
}

fn scanner_buffer(scanner: &SseScanner) -> usize {
    scanner.buffered()
}

#[test]
fn metering_off_runs_no_scanner_and_reports_unknown() {
    let usage = meter_with(false, &json(), &[OPENAI_CHAT_JSON.as_bytes()], true);
    assert_eq!(usage, Usage { model: None, tokens: TokenCounts::default(), outcome: UsageOutcome::Unknown });
}

#[test]
fn sse_fields_other_than_data_and_multi_line_data_are_handled() {
    // Comments, ids, retry, CR-only line ends, `data` without a space, data split over lines.
    let stream = ": keep-alive\rid: 7\rretry: 100\revent: message_start\rdata:{\"type\":\"message_start\",\r\
data: \"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\r\
data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\r\r";
    let usage = every_split(&sse(), stream.as_bytes());
    assert_eq!(usage, complete("claude-haiku-4-5", TokenCounts { input: 3, output: 2, ..TokenCounts::default() }));
}

/// A chat completion of exactly `len` bytes (the padding is generated text).
fn padded_body(len: usize) -> Vec<u8> {
    let head = b"{\"model\":\"gpt-4o-mini\",\"choices\":[{\"message\":{\"content\":\"";
    let tail = b"\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}";
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b'a');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

fn padded_usage() -> Usage {
    complete("gpt-4o-mini", TokenCounts { input: 7, output: 2, ..TokenCounts::default() })
}

/// Feeds `frames` to a JSON scanner directly: whether it stayed buffered, and what it read.
fn scan_json(length: Option<u64>, frames: &[&[u8]]) -> (bool, Usage) {
    let mut scanner = JsonScanner::new(length);
    for frame in frames {
        scanner.feed(frame);
    }
    (scanner.buffered(), scanner.finish().into_usage(true))
}

fn with_length(length: usize) -> HeaderMap {
    let mut headers = json();
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    headers
}

#[test]
fn a_json_body_exactly_at_the_buffer_cap_is_parsed_in_one_go() {
    let body = padded_body(json::MAX_BUFFERED_BYTES);
    let (a, b) = body.split_at(1000);
    assert_eq!(scan_json(None, &[a, b]), (true, padded_usage()));
    assert_eq!(scan_json(Some(body.len() as u64), &[&body]), (true, padded_usage()));
    assert_eq!(meter(&with_length(body.len()), &[a, b], true), padded_usage());
}

#[test]
fn a_json_body_one_byte_past_the_cap_switches_to_the_push_parser() {
    let body = padded_body(json::MAX_BUFFERED_BYTES + 1);
    // Outgrows the buffer mid-body: the bytes held so far go to the parser, then the rest.
    for at in [0, 1, 1000, json::MAX_BUFFERED_BYTES, body.len()] {
        let (a, b) = body.split_at(at);
        assert_eq!(scan_json(None, &[a, b]), (false, padded_usage()), "split at {at}");
    }
    // `Content-Length` says it will not fit: pushed from the first byte, never buffered.
    let mut scanner = JsonScanner::new(Some(body.len() as u64));
    assert!(!scanner.buffered());
    scanner.feed(&body[..10]);
    assert!(!scanner.buffered());
    assert_eq!(scan_json(Some(body.len() as u64), &[&body]), (false, padded_usage()));
    assert_eq!(meter(&with_length(body.len()), &[&body], true), padded_usage());
    assert_eq!(meter(&json(), &[&body], true), padded_usage());
    // A compressed body's `Content-Length` is its encoded size: it does not size the buffer.
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&body).unwrap();
    let gzip = gzip.finish().unwrap();
    let mut headers = headers("application/json", Some("gzip"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(gzip.len()));
    assert_eq!(meter(&headers, &[&gzip], true), padded_usage());
}

#[test]
fn a_json_body_in_many_frames_reads_the_same_as_in_one() {
    let whole = meter(&json(), &[OPENAI_CHAT_JSON.as_bytes()], true);
    for size in [1, 2, 7, 64, 333] {
        let frames: Vec<&[u8]> = OPENAI_CHAT_JSON.as_bytes().chunks(size).collect();
        assert_eq!(meter(&json(), &frames, true), whole, "frames of {size}");
        assert_eq!(meter(&with_length(OPENAI_CHAT_JSON.len()), &frames, true), whole, "frames of {size}, sized");
    }
    // And a body past the cap, in many frames, crossing the cap mid-frame.
    let body = padded_body(3 * json::MAX_BUFFERED_BYTES + 17);
    let frames: Vec<&[u8]> = body.chunks(4093).collect();
    assert_eq!(meter(&json(), &frames, true), padded_usage());
}

#[test]
fn a_truncated_small_json_body_keeps_what_came_before_the_cut() {
    let body = OPENAI_CHAT_JSON.as_bytes();
    // Cut inside `usage`, after its first count: that count, incomplete, even if the body "ended".
    let cut = OPENAI_CHAT_JSON.find("\"completion_tokens\"").unwrap();
    for completed in [false, true] {
        let usage = meter(&json(), &[&body[..cut]], completed);
        assert_eq!(usage.outcome, UsageOutcome::Incomplete);
        assert_eq!(usage.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(usage.tokens, TokenCounts { input: 19, ..TokenCounts::default() });
    }
    // Cut before `usage`: nothing to count, unknown.
    let cut = OPENAI_CHAT_JSON.find("\"choices\"").unwrap();
    let usage = meter(&json(), &[&body[..cut]], false);
    assert_eq!(usage.outcome, UsageOutcome::Unknown);
    assert_eq!(usage.model.as_deref(), Some("gpt-4.1-2025-04-14"));
    // Only the closing brace missing: every count read, but not the end of the document.
    let usage = meter(&json(), &[&body[..body.len() - 1]], true);
    assert_eq!(usage.outcome, UsageOutcome::Incomplete);
    assert_eq!(usage.tokens.reasoning, 4);
}

#[test]
fn json_usage_that_is_not_an_object_reads_nothing() {
    // A derived struct would read an array of counts in field order; the push parser reads
    // nothing inside an array, and neither does the one-shot parse.
    for body in [
        r#"{"model":"m","usage":[19,10]}"#,
        r#"["m",{"prompt_tokens":19}]"#,
        r#"{"model":"m","usage":{"prompt_tokens":19,"prompt_tokens_details":[3]}}"#,
    ] {
        let usage = meter(&json(), &[body.as_bytes()], true);
        let expected_input = u64::from(body.contains("details")) * 19;
        assert_eq!(usage.tokens, TokenCounts { input: expected_input, ..TokenCounts::default() }, "{body}");
    }
    // Duplicate keys (serde refuses them) read as the push parser reads them: the last wins.
    let duplicate = r#"{"model":"m","usage":{"prompt_tokens":1,"prompt_tokens":5}}"#;
    let usage = meter(&json(), &[duplicate.as_bytes()], true);
    assert_eq!(usage, complete("m", TokenCounts { input: 5, ..TokenCounts::default() }));
}

/// The stage's cost, for callgrind (`cargo test --release -p aurora-dataplane --lib
/// metering::tests::cost_harness -- --ignored`, with `METERING_HARNESS=json|stream`,
/// `AURORA_USAGE_METERING=on|off`, `METERING_RESPONSES=N`): meters N responses as the proxy
/// does (start, one `sent` per frame, end), so the instruction count with it on minus with it
/// off, divided by N, is what metering adds per response.
#[test]
#[ignore = "a harness for callgrind, not a test"]
fn cost_harness() {
    let kind = std::env::var("METERING_HARNESS").unwrap_or_else(|_| "json".into());
    let enabled = std::env::var("AURORA_USAGE_METERING").as_deref() != Ok("off");
    let responses: usize = std::env::var("METERING_RESPONSES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (headers, frames): (HeaderMap, Vec<bytes::Bytes>) = if kind == "stream" {
        let mut frames: Vec<bytes::Bytes> = (0..50)
            .map(|i| {
                bytes::Bytes::from(format!(
                    "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
                ))
            })
            .collect();
        frames.push(bytes::Bytes::from_static(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":50,\"total_tokens\":59}}\n\n"));
        frames.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
        (sse(), frames)
    } else {
        (json(), vec![bytes::Bytes::from_static(OPENAI_CHAT_JSON.as_bytes())])
    };
    let metering = Metering::new(enabled);
    let mut outcomes = 0;
    for _ in 0..responses {
        let mut meter = metering.start(StatusCode::OK, &headers, None);
        for frame in &frames {
            meter.sent(frame);
        }
        let usage = meter.end(true, Principal::Anonymous, ProviderKind::OpenAi, &crate::usage::DiscardUsage);
        outcomes += usize::from(usage.outcome == UsageOutcome::Complete);
    }
    assert_eq!(outcomes, if enabled { responses } else { 0 });
}
