#!/usr/bin/env python3
"""Measures the Redis memory of one replay record and of one attribution-stream entry on a
real redis-server (its `used_memory` before and after N writes, and MEMORY USAGE of the
stream), with the gateway's own replay script and key shapes. docs/redis.md quotes its
output.

    python3 docs/redis-memory.py            # from the repository root; needs redis-server
    SIZES=700,2048 N=5000 python3 docs/redis-memory.py --stream-only
"""
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

SOURCE = os.path.join(os.path.dirname(__file__), "..", "crates", "passport-gate", "src", "replay", "redis.rs")
text = open(SOURCE).read()
start = text.index('const CHECK_AND_RECORD: &str = r#"') + len('const CHECK_AND_RECORD: &str = r#"')
SCRIPT = text[start:text.index('"#;', start)]
PORT = int(os.environ.get("PORT", "16399"))
N = int(os.environ.get("N", "20000"))
SIZES = [int(x) for x in os.environ.get("SIZES", "512,700,1024,2048,3000,4100,8192").split(",")]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def cli(*args):
    return subprocess.run(["redis-cli", "-p", str(PORT), *map(str, args)], capture_output=True, text=True).stdout


def used():
    cli("MEMORY", "PURGE")
    return int(re.search(r"used_memory:(\d+)", cli("INFO", "memory")).group(1))


def pipe(commands):
    p = subprocess.run(["redis-cli", "-p", str(PORT), "--pipe"], input=b"".join(commands), capture_output=True)
    assert b"errors: 0" in p.stdout, p.stdout


def fresh(data_dir):
    server = subprocess.Popen(
        ["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--dir", data_dir,
         "--appendonly", "yes", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL)
    for _ in range(200):
        if "PONG" in cli("PING"):
            return server
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def principal(i):
    return "gonka1" + ("%037x" % i)[-37:]  # an address is 43 characters


def run(label, commands):
    with tempfile.TemporaryDirectory() as d:
        server = fresh(d)
        try:
            before = used()
            pipe(commands)
            after = used()
            extra = ""
            key = {"stream": "aps:attribution", "revocation": "aps:revoked"}.get(label.split(",")[0])
            if key:
                mu = int(cli("MEMORY", "USAGE", key, "SAMPLES", "0").strip())
                extra = f", {mu / N:.0f} by MEMORY USAGE"
            print(f"{label}: {(after - before) / N:.0f} bytes each by used_memory{extra}")
        finally:
            server.kill()
            server.wait()


print(subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip())
now = int(time.time() * 1000)
ttl = (1800 + 300) * 1000
if "--stream-only" not in sys.argv:
    for label, principals in [("replay, 200 principals x 100 records", 200),
                              ("replay, one principal x N records", 1),
                              ("replay, N principals x one record", N)]:
        commands = []
        for i in range(N):
            p = principal(i % principals)
            member = secrets.token_hex(32)
            commands.append(resp("EVAL", SCRIPT, 2, f"aps:replay:{{{p}}}:{member}", f"aps:replay-quota:{{{p}}}",
                                 now, now + ttl, ttl, 1000000, member))
        run(label, commands)
    run("revocation, principal entries",
        [resp("SADD", "aps:revoked", "principal " + principal(i)) for i in range(N)])
for size in SIZES:
    event = b'{"v":"aps-attribution-v1","x":"' + b"a" * (size - 33) + b'"}'
    run(f"stream, {size}-byte events",
        [resp("XADD", "aps:attribution", "MAXLEN", "~", 1000000, "*", "event", event) for _ in range(N)])
