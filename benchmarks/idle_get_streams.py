"""Hostile idle ``GET /mcp`` event streams against ``sb-otel serve --transport http``: how long a valid call takes.

Issue 25: on main, 64 idle GET streams (the connection cap) made every later call answer 503. Here 500 GETs are
opened and held unread (the client side never closes), then a valid ``health_check`` call (a raw JSON-RPC POST
on a fresh connection, as a shell's client makes one) is timed, interleaved with the same call without any GET
held. Prints p50/p99/max of both and what the GETs were answered.

    .venv/bin/python benchmarks/idle_get_streams.py [--streams 500] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time

from _harness import start_server

CALL = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "health_check", "arguments": {}}}
).encode()


def _address(url: str) -> tuple[str, int, str]:
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    return host, int(port), "/" + path


def _get(url: str) -> tuple[socket.socket, int]:
    host, port, path = _address(url)
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock, int(sock.recv(4096).split(b" ", 2)[1])


def _call(url: str) -> float:
    """Seconds for one POST health_check on a new connection, until its whole answer is in."""
    host, port, path = _address(url)
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=30) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\n"
            f"Content-Length: {len(CALL)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + CALL)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = time.perf_counter() - started
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the call was not answered 200: {answer[:200]!r}")
    return elapsed


def _summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[max(0, round(len(ordered) * 0.99) - 1)]
    p50, worst = statistics.median(ordered), ordered[-1]
    return f"{name}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, url, _ = start_server(tmp, {"OTEL_EXPORTER_OTLP_ENDPOINT": None, "SB_OTEL_REAP_INTERVAL": "1h"})
        try:
            for _ in range(20):
                _call(url)  # warm up
            quiet = [_call(url) for _ in range(args.calls)]
            held, answers = [], {}
            for _ in range(args.streams):
                sock, status = _get(url)
                held.append(sock)
                answers[status] = answers.get(status, 0) + 1
            busy = [_call(url) for _ in range(args.calls)]
            for sock in held:
                sock.close()
        finally:
            server.terminate()
            server.wait(30)
    print(f"{args.streams} GET streams held open, answered: {answers}")
    print(_summary("health_check, no GET held", quiet))
    print(_summary(f"health_check, {args.streams} GETs held", busy))


if __name__ == "__main__":
    main()
