//! The OpenAI-shaped providers' part of the usage upstream: OpenRouter, Z.ai and vLLM bodies
//! as each of them writes its answers (OpenRouter's `cost` fields and `: OPENROUTER PROCESSING`
//! comments, Z.ai's GLM cached tokens and `reasoning_content`, vLLM's `null` details and
//! continuous usage stats in every chunk). Every provider declares token counts of its own, so
//! a response metered under the wrong provider, or a cumulative count added up, shows in the
//! totals the tests assert.

use aurora_core::ProviderKind;
use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

use super::{gzip, mount};

/// OpenRouter chat JSON: 1234 prompt tokens (1024 cached), 345 completion (256 reasoning).
pub const OPENROUTER_CHAT_JSON: &str = r#"{"id":"gen-1764590000-Kq3vX9sTnB2mWcLp","provider":"OpenAI","model":"openai/gpt-5-mini","object":"chat.completion","created":1764590000,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"completed","index":0,"message":{"role":"assistant","content":"ok","refusal":null,"reasoning":"The user asks for exactly ok.","reasoning_details":[{"type":"reasoning.summary","summary":"The user asks for exactly ok.","format":"openai-responses-v1","index":0}]}}],"usage":{"prompt_tokens":1234,"completion_tokens":345,"total_tokens":1579,"cost":0.00072605,"is_byok":false,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.00007805,"upstream_inference_completions_cost":0.00069},"completion_tokens_details":{"reasoning_tokens":256,"image_tokens":0}}}"#;

/// OpenRouter chat stream with the usage chunk: 611 prompt (512 cached), 77 completion (40
/// reasoning). OpenRouter keeps the connection alive with SSE comments.
pub const OPENROUTER_CHAT_SSE: &str = concat!(
    ": OPENROUTER PROCESSING\n\n",
    "data: {\"id\":\"gen-1764590001-Zr8pQ1wYhD5eFjUa\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-5-mini\",\"object\":\"chat.completion.chunk\",\"created\":1764590001,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\",\"reasoning\":null},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}]}\n\n",
    ": OPENROUTER PROCESSING\n\n",
    "data: {\"id\":\"gen-1764590001-Zr8pQ1wYhD5eFjUa\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-5-mini\",\"object\":\"chat.completion.chunk\",\"created\":1764590001,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\",\"native_finish_reason\":\"completed\",\"logprobs\":null}]}\n\n",
    "data: {\"id\":\"gen-1764590001-Zr8pQ1wYhD5eFjUa\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-5-mini\",\"object\":\"chat.completion.chunk\",\"created\":1764590001,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}],\"usage\":{\"prompt_tokens\":611,\"completion_tokens\":77,\"total_tokens\":688,\"cost\":0.00016815,\"is_byok\":false,\"prompt_tokens_details\":{\"cached_tokens\":512,\"audio_tokens\":0},\"cost_details\":{\"upstream_inference_cost\":null,\"upstream_inference_prompt_cost\":0.00001415,\"upstream_inference_completions_cost\":0.000154},\"completion_tokens_details\":{\"reasoning_tokens\":40,\"image_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

/// Z.ai GLM chat JSON (served gzip-compressed): 2718 prompt (1280 cached), 281 completion.
pub const ZAI_CHAT_JSON: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"ok","reasoning_content":"The user wants exactly ok, so I answer ok.","role":"assistant"}}],"created":1764590100,"id":"20251201165500a3f1c9d2e84b4f7a","model":"glm-4.6","object":"chat.completion","request_id":"20251201165500a3f1c9d2e84b4f7a","usage":{"completion_tokens":281,"prompt_tokens":2718,"prompt_tokens_details":{"cached_tokens":1280},"total_tokens":2999}}"#;

/// Z.ai GLM chat stream, usage in the chunk that finishes: 314 prompt (192 cached), 159
/// completion.
pub const ZAI_CHAT_SSE: &str = concat!(
    "data: {\"id\":\"20251201165501b7e2d4f6a8c0e1f3\",\"created\":1764590101,\"object\":\"chat.completion.chunk\",\"model\":\"glm-4.5-air\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Reply ok.\"}}]}\n\n",
    "data: {\"id\":\"20251201165501b7e2d4f6a8c0e1f3\",\"created\":1764590101,\"object\":\"chat.completion.chunk\",\"model\":\"glm-4.5-air\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"}}]}\n\n",
    "data: {\"id\":\"20251201165501b7e2d4f6a8c0e1f3\",\"created\":1764590101,\"object\":\"chat.completion.chunk\",\"model\":\"glm-4.5-air\",\"choices\":[{\"index\":0,\"finish_reason\":\"stop\",\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":{\"prompt_tokens\":314,\"completion_tokens\":159,\"total_tokens\":473,\"prompt_tokens_details\":{\"cached_tokens\":192}}}\n\n",
    "data: [DONE]\n\n",
);

/// vLLM chat JSON: 42 prompt, 17 completion, `prompt_tokens_details: null` (no prefix caching
/// stats).
pub const VLLM_CHAT_JSON: &str = r#"{"id":"chatcmpl-9f1c2d3e4b5a46789abcdef012345678","object":"chat.completion","created":1764590200,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"ok","refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":42,"total_tokens":59,"completion_tokens":17,"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}"#;

/// vLLM chat stream asked for `continuous_usage_stats`: every chunk carries the running usage
/// (cumulative: the last one, 27 prompt and 5 completion, is the answer's, not their sum).
pub const VLLM_CHAT_SSE: &str = concat!(
    "data: {\"id\":\"chatcmpl-0b1c2d3e4f5a46b7\",\"object\":\"chat.completion.chunk\",\"created\":1764590201,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":27,\"completion_tokens\":0}}\n\n",
    "data: {\"id\":\"chatcmpl-0b1c2d3e4f5a46b7\",\"object\":\"chat.completion.chunk\",\"created\":1764590201,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":28,\"completion_tokens\":1}}\n\n",
    "data: {\"id\":\"chatcmpl-0b1c2d3e4f5a46b7\",\"object\":\"chat.completion.chunk\",\"created\":1764590201,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\".\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":32,\"completion_tokens\":5}}\n\n",
    "data: {\"id\":\"chatcmpl-0b1c2d3e4f5a46b7\",\"object\":\"chat.completion.chunk\",\"created\":1764590201,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":27,\"total_tokens\":32,\"completion_tokens\":5}}\n\n",
    "data: [DONE]\n\n",
);

/// vLLM legacy completion JSON: 6 prompt, 16 completion.
pub const VLLM_COMPLETION_JSON: &str = r#"{"id":"cmpl-5e6f7a8b9c0d4e1f8a2b3c4d5e6f7a8b","object":"text_completion","created":1764590202,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"text":" ok, and a few more words to fill sixteen tokens.","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_logprobs":null}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":6,"total_tokens":22,"completion_tokens":16,"prompt_tokens_details":null},"kv_transfer_params":null}"#;

/// Mounts the three providers' endpoints on `server`. A stream mock answers only a request
/// that asked for the usage chunk (and, for vLLM, continuous stats); every mock only requests
/// carrying its own provider's credential under its own base path.
pub async fn mount_all(server: &MockServer) {
    let sse = |body: &str| ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "text/event-stream");
    let json = |body: Vec<u8>| ResponseTemplate::new(200).set_body_raw(body, "application/json");
    let usage_stream = json!({"stream": true, "stream_options": {"include_usage": true}});

    let openrouter = ProviderKind::OpenRouter;
    mount(server, openrouter, "/chat/completions", Some(usage_stream.clone()), sse(OPENROUTER_CHAT_SSE)).await;
    mount(server, openrouter, "/chat/completions", None, json(OPENROUTER_CHAT_JSON.into())).await;

    let zai = ProviderKind::Zai;
    mount(server, zai, "/chat/completions", Some(usage_stream), sse(ZAI_CHAT_SSE)).await;
    let compressed = json(gzip(ZAI_CHAT_JSON.as_bytes())).insert_header("content-encoding", "gzip");
    mount(server, zai, "/chat/completions", None, compressed).await;

    let vllm = ProviderKind::Vllm;
    let continuous = json!({"stream": true, "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    mount(server, vllm, "/chat/completions", Some(continuous), sse(VLLM_CHAT_SSE)).await;
    mount(server, vllm, "/chat/completions", None, json(VLLM_CHAT_JSON.into())).await;
    mount(server, vllm, "/completions", None, json(VLLM_COMPLETION_JSON.into())).await;
}
