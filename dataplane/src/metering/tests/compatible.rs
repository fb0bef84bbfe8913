//! The OpenAI-shaped providers other than OpenAI, with the fields they add: OpenRouter's `cost`
//! floats, `cost_details` object (with nulls) and `: OPENROUTER PROCESSING` comments, Z.ai's
//! GLM `reasoning_content` and chunks without `usage: null`, vLLM's `prompt_tokens_details:
//! null` and the cumulative usage it puts in every chunk with `continuous_usage_stats`. Each
//! JSON body is read by both paths (the one-shot serde parse and the push parser a body past
//! the buffer cap goes to), which must agree.

use super::*;

const OPENROUTER_JSON: &str = r#"{"id":"gen-1764590000-Kq3vX9sTnB2mWcLp","provider":"OpenAI","model":"openai/gpt-5-mini","object":"chat.completion","created":1764590000,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"completed","index":0,"message":{"role":"assistant","content":"ok","refusal":null,"reasoning":"The user asks for exactly ok.","reasoning_details":[{"type":"reasoning.summary","summary":"The user asks for exactly ok.","format":"openai-responses-v1","index":0}]}}],"usage":{"prompt_tokens":1234,"completion_tokens":345,"total_tokens":1579,"cost":0.00072605,"is_byok":false,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.00007805,"upstream_inference_completions_cost":0.00069},"completion_tokens_details":{"reasoning_tokens":256,"image_tokens":0}}}"#;

const OPENROUTER_SSE: &str = concat!(
    ": OPENROUTER PROCESSING\n\n",
    "data: {\"id\":\"gen-1\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-5-mini\",\"object\":\"chat.completion.chunk\",\"created\":1764590001,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\",\"reasoning\":null},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}]}\n\n",
    ": OPENROUTER PROCESSING\n\n",
    "data: {\"id\":\"gen-1\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-5-mini\",\"object\":\"chat.completion.chunk\",\"created\":1764590001,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}],\"usage\":{\"prompt_tokens\":611,\"completion_tokens\":77,\"total_tokens\":688,\"cost\":0.00016815,\"is_byok\":false,\"prompt_tokens_details\":{\"cached_tokens\":512,\"audio_tokens\":0},\"cost_details\":{\"upstream_inference_cost\":null,\"upstream_inference_prompt_cost\":0.00001415,\"upstream_inference_completions_cost\":0.000154},\"completion_tokens_details\":{\"reasoning_tokens\":40,\"image_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

const ZAI_JSON: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"ok","reasoning_content":"The user wants exactly ok, so I answer ok.","role":"assistant"}}],"created":1764590100,"id":"20251201165500a3f1c9d2e84b4f7a","model":"glm-4.6","object":"chat.completion","request_id":"20251201165500a3f1c9d2e84b4f7a","usage":{"completion_tokens":281,"prompt_tokens":2718,"prompt_tokens_details":{"cached_tokens":1280},"total_tokens":2999}}"#;

const ZAI_SSE: &str = concat!(
    "data: {\"id\":\"2025120116550\",\"created\":1764590101,\"object\":\"chat.completion.chunk\",\"model\":\"glm-4.5-air\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Reply ok.\"}}]}\n\n",
    "data: {\"id\":\"2025120116550\",\"created\":1764590101,\"object\":\"chat.completion.chunk\",\"model\":\"glm-4.5-air\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"}}],\"usage\":{\"prompt_tokens\":314,\"completion_tokens\":159,\"total_tokens\":473,\"prompt_tokens_details\":{\"cached_tokens\":192}}}\n\n",
    "data: [DONE]\n\n",
);

const VLLM_JSON: &str = r#"{"id":"chatcmpl-9f1c2d3e","object":"chat.completion","created":1764590200,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"ok","refusal":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":42,"total_tokens":59,"completion_tokens":17,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}"#;

const VLLM_CONTINUOUS_SSE: &str = concat!(
    "data: {\"id\":\"chatcmpl-0b1c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":27,\"completion_tokens\":0}}\n\n",
    "data: {\"id\":\"chatcmpl-0b1c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":28,\"completion_tokens\":1}}\n\n",
    "data: {\"id\":\"chatcmpl-0b1c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":32,\"completion_tokens\":5}}\n\n",
    "data: [DONE]\n\n",
);

/// Reads `body` by both JSON paths (split at every point for the one-shot parse) and returns
/// the usage they agree on.
fn both_paths(body: &str) -> Usage {
    let buffered = every_split(&json(), body.as_bytes());
    let past_the_cap = Some(json::MAX_BUFFERED_BYTES as u64 + 1);
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    assert_eq!(scan_json(past_the_cap, &[a, b]), (false, buffered.clone()), "the push parser reads the same");
    buffered
}

#[test]
fn openrouter_json_reads_cached_and_reasoning_past_its_cost_fields() {
    let tokens = TokenCounts { input: 1234, output: 345, cache_read_input: 1024, reasoning: 256, ..Default::default() };
    assert_eq!(both_paths(OPENROUTER_JSON), complete("openai/gpt-5-mini", tokens));
}

#[test]
fn openrouter_stream_skips_its_processing_comments() {
    let tokens = TokenCounts { input: 611, output: 77, cache_read_input: 512, reasoning: 40, ..Default::default() };
    assert_eq!(every_split(&sse(), OPENROUTER_SSE.as_bytes()), complete("openai/gpt-5-mini", tokens));
}

#[test]
fn zai_json_and_stream_read_glm_cached_tokens() {
    let tokens = TokenCounts { input: 2718, output: 281, cache_read_input: 1280, ..Default::default() };
    assert_eq!(both_paths(ZAI_JSON), complete("glm-4.6", tokens));
    let tokens = TokenCounts { input: 314, output: 159, cache_read_input: 192, ..Default::default() };
    assert_eq!(every_split(&sse(), ZAI_SSE.as_bytes()), complete("glm-4.5-air", tokens));
}

#[test]
fn vllm_null_details_read_as_none_and_continuous_usage_is_not_added_up() {
    let tokens = TokenCounts { input: 42, output: 17, ..Default::default() };
    assert_eq!(both_paths(VLLM_JSON), complete("meta-llama/Llama-3.1-8B-Instruct", tokens));
    let tokens = TokenCounts { input: 27, output: 5, ..Default::default() };
    assert_eq!(
        every_split(&sse(), VLLM_CONTINUOUS_SSE.as_bytes()),
        complete("meta-llama/Llama-3.1-8B-Instruct", tokens)
    );
    // Cut after the second chunk: the running usage so far, incomplete.
    let cut = VLLM_CONTINUOUS_SSE.match_indices("\n\n").nth(1).unwrap().0 + 2;
    let usage = meter(&sse(), &[&VLLM_CONTINUOUS_SSE.as_bytes()[..cut]], false);
    assert_eq!((usage.tokens.input, usage.tokens.output, usage.outcome), (27, 1, UsageOutcome::Incomplete));
}
