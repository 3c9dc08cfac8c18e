#!/usr/bin/env python3
"""What an unfinished request head costs the gateway, measured from outside (SECURITY.md).

Starts `passport-gate echo` and `passport-gate serve` (cleartext, then TLS with a
self-signed certificate made by openssl), opens N connections that each send a request
head of HEAD_BYTES without its final blank line, and reads the gateway's resident memory
(VmRSS, VmHWM from /proc) before and while they are held. Prints one line per listener:

    heads: cleartext N connections x B bytes: RSS +X KiB (Y KiB each), peak +Z KiB

Usage: python3 crates/passport-gate-cli/benches/heads.py [BINARY] (default
target/release/passport-gate); HEADS_CONNECTIONS (2000), HEADS_BYTES (63000).
"""

import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/passport-gate"
N = int(os.environ.get("HEADS_CONNECTIONS", "2000"))
HEAD = int(os.environ.get("HEADS_BYTES", "63000"))


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def start(args, env=None):
    # Both streams into one pipe: `echo` prints its address on stdout, `serve` on stderr.
    return subprocess.Popen(args, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True, env=env)


def wait_line(p, pattern, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"{pattern!r} never printed")


def measure(tls, upstream, workdir):
    config = os.path.join(workdir, "tls.toml" if tls else "plain.toml")
    text = (
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"
        f"upstream = \"http://{upstream}\"\nmax_connections = {N + 100}\n"
        "header_read_timeout_ms = 60000\n"
    )
    if tls:
        text += f"\n[server.tls]\ncert_file = \"{workdir}/cert.pem\"\nkey_file = \"{workdir}/key.pem\"\n"
    with open(config, "w") as f:
        f.write(text)
    gw = start([BIN, "serve", "--config", config])
    try:
        m = wait_line(gw, r"listening on https?://([0-9.:]+)")
        host, port = m.group(1).rsplit(":", 1)
        time.sleep(0.5)
        before = status(gw.pid, "VmRSS")
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (HEAD - 60) + b"\r\n"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conns = []
        for _ in range(N):
            s = socket.create_connection((host, int(port)))
            if tls:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            s.sendall(head)
            conns.append(s)
        time.sleep(2)
        held = status(gw.pid, "VmRSS")
        peak = status(gw.pid, "VmHWM")
        for s in conns:
            s.close()
        grown = held - before
        name = "tls" if tls else "cleartext"
        print(
            f"heads: {name} {N} connections x {HEAD} bytes: RSS +{grown} KiB "
            f"({grown / N:.1f} KiB each), peak {peak} KiB (start {before} KiB)",
            flush=True,
        )
    finally:
        gw.terminate()
        gw.wait()


def main():
    with tempfile.TemporaryDirectory() as workdir:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{workdir}/key.pem", "-out", f"{workdir}/cert.pem",
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True,
        )
        echo = start([BIN, "echo", "--listen", "127.0.0.1:0"])
        try:
            m = wait_line(echo, r"(127\.0\.0\.1:\d+)")
            upstream = m.group(1)
            measure(False, upstream, workdir)
            measure(True, upstream, workdir)
        finally:
            echo.terminate()
            echo.wait()


if __name__ == "__main__":
    main()
