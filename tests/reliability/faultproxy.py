"""A fault-injecting HTTP proxy on loopback, in front of the moto S3 server.

Requests are forwarded to the upstream endpoint unchanged; a :class:`Fault`
plan decides, per request, whether to answer with an S3 error (500, 503,
``SlowDown``), reset the connection, cut a response body short while still
announcing its full length, add latency, or hold a request unanswered and
never forward it (``hang``: the client is stuck mid-write, so a test can kill
it at exactly that point). Every decision is counted, so tests can assert the
faults really happened.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected fault</Message><RequestId>fault</RequestId></Error>"
)
KINDS = ("500", "503", "slowdown", "reset", "truncate", "latency", "hang")


@dataclass
class Fault:
    """Inject ``kind`` into the first ``times`` requests matching ``method`` and ``path``.

    Attributes:
        kind: One of ``500``, ``503``, ``slowdown``, ``reset``, ``truncate``,
            ``latency``, ``hang``.
        method: Regular expression on the HTTP method (``GET``, ``PUT``...).
        path: Regular expression searched in the request path (bucket/key and query).
        times: How many matching requests get the fault (then they pass); -1 = all.
        every: Only every n-th matching request gets the fault (1 = each one).
        skip: The first ``skip`` matching requests pass untouched.
        delay: Seconds of added latency (``latency``), or the longest a ``hang``
            holds its request before dropping it (``FaultProxy.release`` ends it sooner).
    """

    kind: str
    method: str = ".*"
    path: str = ".*"
    times: int = 1
    every: int = 1
    skip: int = 0
    delay: float = 0.05
    seen: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def fires(self, method: str, path: str) -> bool:
        if not re.fullmatch(self.method, method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times == 0 or (self.seen - self.skip - 1) % self.every:
            return False
        if self.times > 0:
            self.times -= 1
        return True


class FaultProxy:
    """The proxy: ``url`` to point clients at, ``faults`` to change the plan."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests += 1
                    fault = next((f for f in proxy.faults if f.fires(self.command, self.path)), None)
                    if fault is not None:
                        proxy.injected[fault.kind] += 1
                if fault is not None and fault.kind == "hang":
                    # Never forwarded: the write does not land, whatever the client does next.
                    proxy.released.wait(fault.delay)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == "latency":
                    time.sleep(fault.delay)
                    fault = None
                if fault is not None and fault.kind == "reset":
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if fault is not None and fault.kind in ("500", "503", "slowdown"):
                    code = {"500": "InternalError", "503": "ServiceUnavailable", "slowdown": "SlowDown"}
                    payload = ERROR_BODY.format(code=code[fault.kind]).encode()
                    self.send_response(500 if fault.kind == "500" else 503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in (
                        "connection",
                        "transfer-encoding",
                        "content-length",
                        "date",
                        "server",
                    ):
                        self.send_header(k, v)
                announced = (
                    len(data) if self.command != "HEAD" else int(resp.getheader("Content-Length") or 0)
                )
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault is not None and fault.kind == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint URL on 127.0.0.1."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def plan(self, *faults: Fault) -> None:
        """Replace the fault plan and reset the counters (held requests are dropped)."""
        with self.lock:
            self.release()
            self.released.clear()
            self.faults = list(faults)
            self.injected.clear()
            self.requests = 0

    def release(self) -> None:
        """Drop every request a ``hang`` fault holds (their clients see the connection close)."""
        self.released.set()

    def wait_injected(
        self, kind: str, timeout: float = 120.0, alive: Callable[[], bool] | None = None
    ) -> None:
        """Wait until a ``kind`` fault has fired (while ``alive()`` holds, if given).

        Raises:
            TimeoutError: If it has not fired within ``timeout`` seconds, or
                ``alive()`` turned false first.
        """
        deadline = time.monotonic() + timeout
        while not self.injected[kind]:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise TimeoutError(f"no {kind} fault fired ({self.requests} requests seen)")
            time.sleep(0.02)


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` in front of ``upstream`` for the duration of the block."""
    proxy = FaultProxy(upstream)
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.release()
        proxy.server.shutdown()
        proxy.server.server_close()
