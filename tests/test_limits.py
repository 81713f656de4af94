"""Bodies over their limits leave the server's memory where it was: an upload over
DOCQA_MAX_UPLOAD_MB, a JSON body over DOCQA_MAX_JSON_KB, stalled bodies and a flood of form
fields each keep the API's resident memory within 64 MB of its settled size (psutil, sampled
every 5 ms, as benchmarks/bench_upload.py measures it). Default limits: 50 MB and 256 KB."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.stack import Proc, new_database, stack_env, start_api

pytestmark = pytest.mark.slow
MB = 1024 * 1024
BUDGET_MB = 64
RESULTS: dict[str, float] = {}


class Peak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak


def settle(pid: int, quiet_s: float = 3.0, timeout_s: float = 90.0) -> int:
    """The RSS once it has not moved by more than 1 MB for `quiet_s` (the model loads in the
    background after start-up)."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout_s
    last, since = proc.memory_info().rss, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        rss = proc.memory_info().rss
        if abs(rss - last) > MB:
            last, since = rss, time.monotonic()
    return int(proc.memory_info().rss)


@pytest.fixture(scope="module")
def server(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    folder = tmp_path_factory.mktemp("limits")
    env = stack_env(
        new_database(pg_server_url, "docqa_limits"), folder / "data", DOCQA_BODY_TIMEOUT_S="2"
    )
    api, url = start_api(env, folder, "limits-api")
    api.url = url  # type: ignore[attr-defined]
    try:
        yield api
    finally:
        api.stop()


def _connect(api: Proc) -> socket.socket:
    host, port = api.url.split("//")[1].split(":")  # type: ignore[attr-defined]
    return socket.create_connection((host, int(port)), timeout=30)


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            return 0
        data += piece
    return int(data.split(b" ", 2)[1])


def _chunked(sock: socket.socket, path: str, ctype: str, pieces: Iterator[bytes]) -> int:
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    with contextlib.suppress(OSError):
        for piece in pieces:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending, like a client reading as it sends
        else:
            sock.sendall(b"0\r\n\r\n")
    return _status(sock)


def measure(api: Proc, name: str, action: Callable[[], None]) -> float:
    assert api.popen is not None
    baseline = settle(api.popen.pid)
    sampler = Peak(api.popen.pid)
    sampler.start()
    try:
        action()
    finally:
        peak = sampler.stop()
    grown = (peak - baseline) / MB
    RESULTS[name] = grown
    print(f"{name}: RSS {baseline / MB:.0f} MB -> peak {peak / MB:.0f} MB (+{grown:.1f} MB)")
    return grown


def test_upload_over_the_limit(server: Proc) -> None:
    def send() -> None:
        with _connect(server) as sock:
            head = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
                b"Content-Type: text/plain\r\n\r\n"
            )
            pieces = iter([head, *([b"x" * MB] * 120)])  # 120 MB against 50 MB
            assert (
                _chunked(sock, "/api/v1/upload", "multipart/form-data; boundary=b", pieces) == 413
            )

    assert measure(server, "upload of 120 MB (limit 50 MB), chunked", send) < BUDGET_MB


def test_json_body_over_the_limit(server: Proc) -> None:
    def send() -> None:
        with _connect(server) as sock:
            sock.sendall(
                f"POST /api/v1/ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: {300 * MB}\r\n\r\n".encode()
            )
            assert _status(sock) == 413  # at once, from Content-Length
        with _connect(server) as sock:
            pieces = iter([b'{"question": "', *([b"a" * MB] * 64)])
            assert _chunked(sock, "/api/v1/ask", "application/json", pieces) == 413

    assert measure(server, "JSON of 300 MB declared, and 64 MB chunked", send) < BUDGET_MB


def test_stalled_bodies(server: Proc) -> None:
    def stall() -> None:
        socks = []
        try:
            for i in range(100):
                sock = _connect(server)
                socks.append(sock)
                body = b"s" * 500_000
                sock.sendall(
                    b"POST /api/v1/upload HTTP/1.1\r\nHost: t\r\n"
                    b"Content-Type: multipart/form-data; boundary=b\r\n"
                    + f"Content-Length: {len(body) * 4}\r\n\r\n".encode()
                    + b'--b\r\nContent-Disposition: form-data; name="file"; '
                    + f'filename="stall{i}.txt"\r\n\r\n'.encode()
                    + body
                )
            statuses = [_status(sock) for sock in socks]
            assert statuses == [408] * len(socks), statuses
        finally:
            for sock in socks:
                sock.close()

    assert measure(server, "100 stalled uploads of 0.5 MB each", stall) < BUDGET_MB


def test_flood_of_form_fields(server: Proc) -> None:
    def flood() -> None:
        value = b"v" * (64 * 1024 - 100)

        def parts() -> Iterator[bytes]:
            for i in range(6000):  # 381 MB of fields, as in the issue
                yield (
                    f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode()
                    + value
                    + b"\r\n"
                )

        with _connect(server) as sock:
            status = _chunked(sock, "/api/v1/upload", "multipart/form-data; boundary=b", parts())
            assert status in (400, 413), status

    assert measure(server, "6,000 form fields of 64 KB, chunked", flood) < BUDGET_MB


def test_no_upload_was_left_behind(server: Proc) -> None:
    data = Path(server.env["DOCQA_DATA_DIR"]) / "blobs"
    assert [p for p in data.rglob("*") if p.is_file()] == []
    print("RSS growth per case (MB):", {k: round(v, 1) for k, v in RESULTS.items()})
