"""Drives the official Anthropic SDK through an Aurora data plane.

Run by tests/e2e/sdk.rs with AURORA_URL (the data plane's base URL) and AURORA_TOKEN (a valid
gateway token). Exits non-zero, with the reason on stderr, if any check fails.
"""

import os
import sys

import anthropic

BASE_URL = os.environ["AURORA_URL"] + "/p/anthropic"
TOKEN = os.environ["AURORA_TOKEN"]
MESSAGES = [{"role": "user", "content": "Reply with exactly ok"}]
MODEL = "claude-3-haiku-20240307"


def check(client: anthropic.Anthropic, how: str) -> None:
    message = client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert message.content[0].text == "ok", f"{how}: unexpected reply {message!r}"

    with client.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES) as stream:
        text = stream.get_final_text()
    assert text == "ok", f"{how} (stream): unexpected text {text!r}"


def main() -> None:
    # auth_token sends `Authorization: Bearer`; the product page's recommended form.
    check(anthropic.Anthropic(base_url=BASE_URL, auth_token=TOKEN, api_key=None, max_retries=0), "auth_token")
    # api_key sends `X-Api-Key`, which is all many Anthropic clients can set.
    check(anthropic.Anthropic(base_url=BASE_URL, api_key=TOKEN, max_retries=0), "api_key")

    bad = anthropic.Anthropic(base_url=BASE_URL, auth_token="not-a-valid-token", api_key=None, max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    except anthropic.AuthenticationError as err:
        assert err.status_code == 401, err
        assert err.body["error"]["type"] == "authentication_error", err.body
    else:
        raise AssertionError("an invalid token did not raise anthropic.AuthenticationError")
    print("anthropic sdk: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report any failure as one line for the Rust test
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
