"""Drives the official OpenAI SDK through an Aurora data plane.

Run by tests/e2e/sdk.rs with AURORA_URL and AURORA_TOKEN. Exits non-zero, with the reason on
stderr, if any check fails.
"""

import os
import sys

import openai

BASE_URL = os.environ["AURORA_URL"] + "/p/openai/v1"
TOKEN = os.environ["AURORA_TOKEN"]
MESSAGES = [{"role": "user", "content": "Reply with exactly ok"}]
MODEL = "gpt-4o-mini"


def main() -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key=TOKEN, max_retries=0)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "ok", completion

    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "ok", f"stream: unexpected text {text!r}"

    bad = openai.OpenAI(base_url=BASE_URL, api_key="not-a-valid-token", max_retries=0)
    try:
        bad.chat.completions.create(model=MODEL, messages=MESSAGES)
    except openai.AuthenticationError as err:
        assert err.status_code == 401, err
    else:
        raise AssertionError("an invalid token did not raise openai.AuthenticationError")
    print("openai sdk: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report any failure as one line for the Rust test
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
