"""Real HTTP receivers on 127.0.0.1 for webhook tests: scripted answers, every request kept."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    # each answer: (status, headers) or "hang:<seconds>" or "reset"; the last one repeats
    script: list[Any] = field(default_factory=lambda: [(200, {})])
    received: list[Received] = field(default_factory=list)

    def next_answer(self) -> Any:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


@contextmanager
def receiver(script: list[Any] | None = None) -> Iterator[Receiver]:
    state = Receiver("", list(script or [(200, {})]))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            state.received.append(Received(self.path, {k.lower(): v for k, v in
                                                       self.headers.items()}, body, time.time()))
            answer = state.next_answer()
            if answer == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                return
            if isinstance(answer, str) and answer.startswith("hang:"):
                time.sleep(float(answer.split(":")[1]))
                answer = (200, {})
            status, headers = answer[0], answer[1]
            payload = answer[2] if len(answer) > 2 else b"{}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
