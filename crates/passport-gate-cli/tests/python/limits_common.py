"""What limits_sdk.py and limits_replicas_sdk.py share: agents made and requests signed
with the real `passport-gate` CLI, the policy file written in one step, and one chat
request through the openai SDK. Both scripts get the binary, chain id and work
directory from the environment tests/external/openai_sdk.rs sets."""

import json
import os
import subprocess
import time

import httpx
import openai

BIN = os.environ["PG_BIN"]
CHAIN = os.environ["PG_CHAIN"]
WORKDIR = os.environ["PG_WORKDIR"]
MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"


def cli(*args):
    return subprocess.run([BIN, *args], capture_output=True, check=True, timeout=30).stdout


class Principal:
    """A principal key, an agent key and a passport for MODEL, made with the CLI."""

    def __init__(self, name):
        d = os.path.join(WORKDIR, name)
        os.makedirs(d, exist_ok=True)
        self.agent_key = os.path.join(d, "agent.json")
        principal_key = os.path.join(d, "principal.json")
        self.passport_file = os.path.join(d, "passport.txt")
        cli("keygen", "--agent", "--out", self.agent_key)
        cli("keygen", "--principal", "--out", principal_key)
        with open(principal_key) as f:
            self.address = json.load(f)["address"]
        passport = cli("mint", "--principal-key", principal_key, "--agent-key", self.agent_key,
                       "--agent-id", "urn:aps:agent:" + name, "--chain-id", CHAIN,
                       "--ttl", "1800", "--model", MODEL)
        with open(self.passport_file, "wb") as f:
            f.write(passport)
        self.sent_bytes = []

    def sign(self, request: httpx.Request):
        body = request.read()
        self.sent_bytes.append(len(body))
        signed = subprocess.run(
            [BIN, "sign", "--agent-key", self.agent_key, "--passport-file",
             self.passport_file, "--chain-id", CHAIN, "--method", request.method,
             "--uri", request.url.raw_path.decode("ascii"), "--body-file", "-", "--headers"],
            input=body, capture_output=True, check=True, timeout=30).stdout
        for line in signed.decode().splitlines():
            name, value = line.split(": ", 1)
            request.headers[name] = value

    def client(self, gateway, api_key, timeout):
        """An SDK client for `gateway` whose every request this agent signs."""
        return openai.OpenAI(
            base_url=gateway + "/v1", api_key=api_key, max_retries=0, timeout=timeout,
            http_client=httpx.Client(event_hooks={"request": [self.sign]}))


def ask(client, text, **extra):
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **extra)


def write_policy(path, text):
    """Replaces the policy file in one step, then waits for the gateways (which check it
    every 50 ms) to read it."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)
    time.sleep(1.0)
