"""Checks that the official SDKs see a gateway key's limit as their own rate-limit error.

Run by tests/e2e/key_limits_streams.rs with AURORA_URL and AURORA_TOKEN, a key limited to a few
requests per minute. Each SDK calls until it is refused (within a bound) and must raise its own
RateLimitError (retries off), with the gateway's 429 in the provider's shape. Exits non-zero,
with the reason on stderr, if any check fails.
"""

import os
import sys

import anthropic
import openai

URL = os.environ["AURORA_URL"]
TOKEN = os.environ["AURORA_TOKEN"]
MESSAGES = [{"role": "user", "content": "Reply with exactly ok"}]
# More than the key's limit: the limit is a handful of requests per minute.
ATTEMPTS = 20


def check_headers(err, how: str) -> None:
    headers = err.response.headers
    assert err.status_code == 429, f"{how}: status {err.status_code}"
    assert headers.get("x-aurora-error") == "gateway", f"{how}: {dict(headers)}"
    retry = int(headers["retry-after"])
    assert 1 <= retry <= 60, f"{how}: retry-after {retry}"


def anthropic_refused() -> None:
    client = anthropic.Anthropic(base_url=URL + "/p/anthropic", auth_token=TOKEN, api_key=None, max_retries=0)
    for _ in range(ATTEMPTS):
        try:
            client.messages.create(model="claude-haiku-4-5", max_tokens=1, messages=MESSAGES)
        except anthropic.RateLimitError as err:
            check_headers(err, "anthropic")
            assert err.body["error"]["type"] == "rate_limit_error", err.body
            assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0", dict(err.response.headers)
            return
    raise AssertionError(f"anthropic: {ATTEMPTS} calls and no anthropic.RateLimitError")


def openai_refused() -> None:
    client = openai.OpenAI(base_url=URL + "/p/openai/v1", api_key=TOKEN, max_retries=0)
    for _ in range(ATTEMPTS):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.RateLimitError as err:
            check_headers(err, "openai")
            assert err.code == "rate_limit_exceeded", err.body
            assert err.type == "requests", err.body
            assert err.response.headers["x-ratelimit-remaining-requests"] == "0", dict(err.response.headers)
            return
    raise AssertionError(f"openai: {ATTEMPTS} calls and no openai.RateLimitError")


def main() -> None:
    anthropic_refused()
    openai_refused()
    print("limits: both SDKs raised their RateLimitError")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report any failure as one line for the Rust test
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
