#!/usr/bin/env python3
"""A stand-in Anthropic API for scripts/check-image, on the host side of the check's network.

Answers POST .../messages with an Anthropic-shaped message and records each request's method,
path and credential headers as one JSON line, so the script can check what the data plane sent
upstream. Usage: check-image-upstream.py BIND_ADDR PORT_FILE LOG_FILE (port 0: the OS picks one,
written to PORT_FILE once the socket listens).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MESSAGE = {
    "id": "msg_check_image",
    "type": "message",
    "role": "assistant",
    "model": "claude-check-image",
    "content": [{"type": "text", "text": "hello from the upstream stand-in"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 6},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        record = {
            "method": self.command,
            "path": self.path,
            "x-api-key": self.headers.get("x-api-key"),
            "authorization": self.headers.get("authorization"),
            "anthropic-version": self.headers.get("anthropic-version"),
            "body": json.loads(body or b"null"),
        }
        with open(sys.argv[3], "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if not self.path.endswith("/messages"):
            self.send_error(404)
            return
        payload = json.dumps(MESSAGE).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


def main():
    server = HTTPServer((sys.argv[1], 0), Handler)
    # Written whole, then renamed, so the script never reads half a port number.
    with open(sys.argv[2] + ".tmp", "w", encoding="utf-8") as port_file:
        port_file.write(str(server.server_address[1]))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    server.serve_forever()


if __name__ == "__main__":
    main()
