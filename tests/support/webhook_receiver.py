"""A webhook receiver on 127.0.0.1 that keeps the JSON bodies posted to it: where the tests and
benchmarks/studies/champion_sequence.py point the regression automation's notification block."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def start_receiver() -> tuple[ThreadingHTTPServer, list[dict]]:
    """A running server on a free port (serving from a daemon thread; `server.shutdown()` stops
    it) and the list each POSTed JSON body is appended to."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received
