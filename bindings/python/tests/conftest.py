"""Real processes on loopback for the SDK tests: a third-party OpenAI-compatible server
(mockllm, from PyPI), the real `passport-gate serve` binary in front of it, and a small
fault-injecting proxy for the retry test. Every wait is bounded."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "conformance" / "sdk-fixtures.json"
CHAIN = "gonka-test"
ALLOWED_MODEL = "mock-allowed"


def gateway_binary() -> str:
    path = os.environ.get("PASSPORT_GATE_BIN", str(REPO / "target" / "debug" / "passport-gate"))
    if not os.path.exists(path):
        pytest.fail(f"{path} not found: run `cargo build` first or set PASSPORT_GATE_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mockllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """mockllm (PyPI) run with uvicorn on loopback; answers "hello" with a fixed text."""
    work = tmp_path_factory.mktemp("mockllm")
    responses = work / "responses.yml"
    responses.write_text('responses:\n  "hello": "hi from mockllm"\n'
                         'defaults:\n  unknown_response: "hi from mockllm"\n')
    port = free_port()
    env = dict(os.environ, MOCKLLM_RESPONSES_FILE=str(responses))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "mockllm.server:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=(work / "log").open("w"),
    )
    try:
        wait_for_port(port, proc, "mockllm")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


class Gateway:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}/v1"


def start_gateway(tmp: Path, upstream: str, extra: str = "") -> Gateway:
    """The real binary with `extra` appended to its config (e.g. a `[binding]` section)."""
    port, admin = free_port(), free_port()
    config = tmp / "gateway.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
upstream = "{upstream}"
response_timeout_ms = 10000
shutdown_grace_seconds = 1

[agent_envelope]
enabled = true
chain_id = "{CHAIN}"
mode = "required"
replay_protection = true

# Records on disk in the test's directory; the SDK's retry after an upstream 503 goes through.
[replay]
data_dir = "{tmp}"
release_on_retryable = true

[attribution]
file = "{tmp / 'attribution.jsonl'}"
{extra}""")
    proc = subprocess.Popen([gateway_binary(), "serve", "--config", str(config)], cwd=tmp,
                            stdout=(tmp / "gateway.log").open("w"), stderr=subprocess.STDOUT)
    wait_for_port(port, proc, "passport-gate serve")
    return Gateway(proc, port)


@pytest.fixture(scope="session")
def gateway(mockllm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The real gateway (replay protection on) in front of mockllm."""
    g = start_gateway(tmp_path_factory.mktemp("gateway"), mockllm)
    try:
        yield g
    finally:
        stop(g.proc)


class FaultProxy:
    """Forwards to the upstream, except that it answers the first `failures` requests with
    `status` before reading or forwarding anything (an upstream that was overloaded)."""

    def __init__(self, upstream: str, status: int, failures: int) -> None:
        self.seen: List[Dict[str, str]] = []
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                proxy.seen.append(dict(self.headers))
                if len(proxy.seen) <= failures:
                    self.send_response(status)
                    self.send_header("retry-after-ms", "10")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", self.path, body=body,
                             headers={"content-type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("content-type", resp.getheader("content-type", ""))
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_gateway(mockllm: str, tmp_path: Path) -> Iterator[tuple]:
    """A gateway (replay protection on) whose upstream answers the first request 503."""
    proxy = FaultProxy(mockllm, 503, failures=1)
    g = start_gateway(tmp_path, proxy.url)
    try:
        yield g, proxy
    finally:
        stop(g.proc)
        proxy.close()
