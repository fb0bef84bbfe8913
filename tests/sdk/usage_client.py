"""Drives the official SDKs through Aurora against upstreams that declare usage.

Run by tests/e2e/usage_metering.rs with AURORA_URL and AURORA_TOKEN: one call of each kind
(Anthropic JSON and stream, OpenAI gzip-compressed chat JSON, chat stream with usage, Responses
stream, embeddings), checking that the SDK itself reads the upstream's usage unchanged. The Rust
side then checks the gateway's access log counted the same tokens.
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
    print("usage sdk: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report any failure as one line for the Rust test
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
