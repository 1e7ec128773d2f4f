"""An HTTP proxy on 127.0.0.1 that adds a fixed delay to every request.

It stands in front of a local S3 endpoint (the moto server) to mimic the
round-trip time of a real object store: each request waits ``delay`` seconds,
then is forwarded unchanged and its response relayed back. Connections are
kept alive and served by one thread each, so concurrent clients see the delay
concurrently, as they would against S3. Only loopback addresses are used.

Usage, in process or as a separate process (its counters at ``/__stats__``)::

    with latency_proxy("http://127.0.0.1:5000", delay=0.05) as (endpoint, server):
        ...  # point S3 clients at `endpoint`

    python benchmarks/latency_proxy.py http://127.0.0.1:5000 0.05   # prints the endpoint
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    upstream: tuple[str, int]
    delay: float
    requests: int
    inflight: int
    max_inflight: int
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def _relay(self) -> None:
        srv = self.server
        if self.path.startswith("/__stats__"):
            self._stats()
            return
        with srv.lock:
            srv.requests += 1
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        try:
            time.sleep(srv.delay)
            self._forward()
        finally:
            with srv.lock:
                srv.inflight -= 1

    def _forward(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        conn = getattr(self, "_upstream", None)
        if conn is None:
            conn = self._upstream = http.client.HTTPConnection(*srv.upstream, timeout=300)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            # The upstream closed a kept-alive connection: retry once on a new one.
            conn.close()
            conn = self._upstream = http.client.HTTPConnection(*srv.upstream, timeout=300)
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
        data = resp.read()
        self.send_response_only(resp.status, resp.reason)
        head = self.command == "HEAD"
        for key, value in resp.getheaders():
            # A HEAD response announces the object's length without a body.
            if key.lower() not in _HOP_BY_HOP and (head or key.lower() != "content-length"):
                self.send_header(key, value)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _stats(self) -> None:
        # The proxy's own counters (for a proxy running in another process);
        # "?reset" clears the in-flight high-water mark.
        srv = self.server
        with srv.lock:
            body = json.dumps({"requests": srv.requests, "max_inflight": srv.max_inflight}).encode()
            if "reset" in self.path:
                srv.max_inflight = 0
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def latency_proxy(upstream: str, delay: float = 0.05) -> Iterator[tuple[str, _ProxyServer]]:
    """Run the proxy; yield its endpoint URL and the server.

    The server counts ``requests`` and the most requests in flight at once
    (``max_inflight``).
    """
    parts = urlsplit(upstream)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"{upstream}: the latency proxy only forwards to loopback addresses")
    server = _ProxyServer(("127.0.0.1", 0), _Handler)
    server.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
    server.delay = delay
    server.requests = server.inflight = server.max_inflight = 0
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, name="latency-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    """``python latency_proxy.py UPSTREAM [DELAY]``: print the endpoint, serve until stdin closes."""
    upstream = sys.argv[1]
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    with latency_proxy(upstream, delay) as (endpoint, _):
        print(endpoint, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
