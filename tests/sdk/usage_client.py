"""Drives the official SDKs through Aurora against upstreams that declare usage.

Run by tests/e2e/usage_metering.rs and tests/e2e/usage.rs with AURORA_URL and AURORA_TOKEN: one
call of each kind, checking that the SDK itself reads the upstream's usage unchanged. Anthropic:
JSON and stream. OpenAI: gzip-compressed chat JSON, chat stream with usage, Responses stream,
embeddings. OpenRouter, Z.ai and vLLM through the OpenAI SDK: chat JSON (Z.ai's gzip-compressed)
and chat stream with the usage chunk each, and a vLLM legacy completion. The Rust side then
checks the gateway counted the same tokens.
"""

import os
import sys

import anthropic
import openai

URL = os.environ["AURORA_URL"]
TOKEN = os.environ["AURORA_TOKEN"]
MESSAGES = [{"role": "user", "content": "Reply with exactly ok"}]


def main() -> None:
    claude = anthropic.Anthropic(base_url=URL + "/p/anthropic", api_key=TOKEN, max_retries=0)
    message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES)
    assert message.usage.input_tokens == 2095 and message.usage.output_tokens == 503, message.usage
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=16, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 25 and final.usage.output_tokens == 15, final.usage

    client = openai.OpenAI(base_url=URL + "/p/openai/v1", api_key=TOKEN, max_retries=0)
    completion = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert completion.usage.prompt_tokens == 19 and completion.usage.completion_tokens == 10, completion.usage
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.prompt_tokens == 9 and chunks[-1].usage.completion_tokens == 12, chunks[-1]
    events = list(client.responses.create(model="gpt-4.1", input="Reply with exactly ok", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens == 11, events[-1]
    embedding = client.embeddings.create(model="text-embedding-3-small", input="ok")
    assert embedding.usage.prompt_tokens == 8, embedding.usage

    openrouter()
    zai()
    vllm()
    print("usage sdk: ok")


def counts(usage) -> tuple:
    """(prompt, completion, cached, reasoning) as the SDK parsed them; None where absent."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else None
    return (usage.prompt_tokens, usage.completion_tokens, cached, reasoning)


def chat_stream(client: openai.OpenAI, model: str, stream_options: dict) -> list:
    return list(
        client.chat.completions.create(model=model, messages=MESSAGES, stream=True, stream_options=stream_options)
    )


def openrouter() -> None:
    # The base path the README gives: /p/openrouter/v1 goes to the base URL (.../api/v1) itself.
    client = openai.OpenAI(base_url=URL + "/p/openrouter/v1", api_key=TOKEN, max_retries=0)
    completion = client.chat.completions.create(model="openai/gpt-5-mini", messages=MESSAGES)
    assert counts(completion.usage) == (1234, 345, 1024, 256), completion.usage
    chunks = chat_stream(client, "openai/gpt-5-mini", {"include_usage": True})
    assert counts(chunks[-1].usage) == (611, 77, 512, 40), chunks[-1]


def zai() -> None:
    # Without the v1 alias: /p/zai/chat/completions is {base}/chat/completions.
    client = openai.OpenAI(base_url=URL + "/p/zai", api_key=TOKEN, max_retries=0)
    completion = client.chat.completions.create(model="glm-4.6", messages=MESSAGES)
    assert counts(completion.usage) == (2718, 281, 1280, None), completion.usage
    chunks = chat_stream(client, "glm-4.5-air", {"include_usage": True})
    assert counts(chunks[-1].usage) == (314, 159, 192, None), chunks[-1]


def vllm() -> None:
    client = openai.OpenAI(base_url=URL + "/p/vllm/v1", api_key=TOKEN, max_retries=0)
    model = "meta-llama/Llama-3.1-8B-Instruct"
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    assert counts(completion.usage) == (42, 17, None, None), completion.usage
    chunks = chat_stream(client, model, {"include_usage": True, "continuous_usage_stats": True})
    assert [c.usage.completion_tokens for c in chunks] == [0, 1, 5, 5], chunks
    assert counts(chunks[-1].usage) == (27, 5, None, None), chunks[-1]
    legacy = client.completions.create(model=model, prompt="Reply with exactly ok", max_tokens=16)
    assert (legacy.usage.prompt_tokens, legacy.usage.completion_tokens) == (6, 16), legacy.usage


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report any failure as one line for the Rust test
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
