"""Native Gonka signing from Python: the bugs other clients have, the endpoint list, wrong
arguments, and PassportAuth sending both signatures over the bytes it sends."""

import asyncio
import base64
import json

import httpx
import pytest

import passport_gate as pg
from conftest import FIXTURES

F = json.loads(FIXTURES.read_text(encoding="utf-8"))
NATIVE = {c["name"]: c for c in F["gonka_native"]}
AGENT = pg.AgentKey.from_key_file(F["agent_key"]["secret_hex"])
CHAIN = "gonka-mainnet"
PASSPORT = F["mint"][0]["passport"]
GONKA = pg.PrincipalKey.from_key_file("b2" * 32)
NODE1 = "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6"
NODE2 = "gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum"


def test_r_and_s_are_left_padded_to_32_bytes():
    case = NATIVE["r_or_s_with_leading_zero_byte"]
    headers = pg.gonka_sign(case["secret_hex"], base64.b64decode(case["body_base64"]),
                            case["timestamp_ns"], case["transfer_address"])
    sig = base64.b64decode(headers["Authorization"])
    assert len(sig) == 64 and (sig[0] == 0 or sig[32] == 0)
    assert headers["Authorization"] == case["authorization"]


def test_signing_twice_gives_the_same_authorization():
    a = pg.gonka_sign("b2" * 32, b"hello", 1765140000000000001, NODE1)
    b = pg.gonka_sign("b2" * 32, b"hello", 1765140000000000001, NODE1)
    assert a == b


def test_the_signature_is_over_one_sha256_of_the_input_not_two():
    # The node hashes the input once; a pre-hashed input (noble-curves' bug) fails there.
    headers = pg.gonka_sign(GONKA, b"hello", 1765140000000000001, NODE1)
    pg.gonka_verify(GONKA.public_key, headers, b"hello", NODE1)
    with pytest.raises(pg.PassportGateError, match="requester_sig_invalid"):
        pg.gonka_verify(GONKA.public_key, headers, b"hello!", NODE1)


def test_a_key_file_path_a_bare_secret_and_a_principal_key_sign_alike(tmp_path):
    path = tmp_path / "gonka.json"
    GONKA.save(path)
    a = pg.gonka_sign(path, b"x", 5, NODE1)
    assert pg.gonka_sign(str(path), b"x", 5, NODE1) == a
    assert pg.gonka_sign("0x" + "b2" * 32, b"x", 5, NODE1) == a
    assert pg.gonka_sign(GONKA, b"x", 5, NODE1) == a


def test_a_gonka_key_that_is_neither_a_secret_nor_a_file_says_so():
    with pytest.raises(pg.PassportGateError, match="gonka_key is neither a 64-hex-digit secret"):
        pg.gonka_signer("b2" * 31)
    with pytest.raises(TypeError, match="gonka_key must be"):
        pg.gonka_signer(b"\xb2" * 32)


def test_wrong_types_are_refused_loudly():
    with pytest.raises(TypeError, match="endpoints must be a list"):
        pg.transfer_addresses(endpoints="https://n.example/v1;" + NODE1)
    with pytest.raises(TypeError, match="timestamp_ns must be an int"):
        pg.gonka_sign("b2" * 32, b"x", 1.5e18, NODE1)
    for spelling in ("01", "+1", "1e9", " 1"):
        with pytest.raises(pg.PassportGateError, match="canonical decimal"):
            pg.gonka_sign("b2" * 32, b"x", spelling, NODE1)
    with pytest.raises(TypeError, match="body must be bytes or str"):
        pg.gonka_sign("b2" * 32, {"model": "m"}, 5, NODE1)
    with pytest.raises(TypeError, match="transfer_address must be a str"):
        pg.transfer_addresses(transfer_address=[NODE1])


def test_parse_endpoint_reads_url_and_address():
    assert pg.parse_endpoint(f"https://node1.example/v1;{NODE1}") == (
        "https://node1.example/v1", NODE1)
    assert pg.parse_endpoint("https://node1.example/v1") == ("https://node1.example/v1", None)


def test_a_bad_transfer_address_names_the_entry_and_the_prefix():
    entry = "https://node1.example/v1;gonka1test"
    with pytest.raises(pg.PassportGateError, match="gonka1test") as e:
        pg.parse_endpoint(entry)
    assert entry in str(e.value)
    with pytest.raises(pg.PassportGateError, match=r"not a cosmos1\.\.\. account address"):
        pg.transfer_addresses(transfer_address=NODE1, prefix="cosmos")


def signed_requests(auth):
    seen = []

    def handler(request):
        request.read()
        seen.append(request)
        return httpx.Response(200, json={})

    return seen, httpx.Client(auth=auth, transport=httpx.MockTransport(handler))


def test_passport_auth_sends_both_signatures_over_the_bytes_sent():
    auth = pg.PassportAuth(AGENT, PASSPORT, CHAIN, gonka_key="b2" * 32, transfer_address=NODE1)
    seen, client = signed_requests(auth)
    body = json.dumps({"model": "m", "messages": []}).encode()

    def chunks():
        yield body[:7]
        yield body[7:]

    with client:
        client.post("https://node1.example/v1/chat/completions?trace=a%20b", content=chunks(),
                    headers={"authorization": "Bearer unused"})
    (request,) = seen
    assert request.content == body
    native = {k: request.headers[k] for k in
              ("Authorization", "X-Requester-Address", "X-Timestamp", "X-Transfer-Address")}
    assert native["X-Transfer-Address"] == NODE1
    pg.gonka_verify(GONKA.public_key, native, request.content, NODE2)
    verdict = pg.verify(chain_id=CHAIN, method="POST", uri=request.url.raw_path.decode(),
                        passport=request.headers["X-Agent-Passport"],
                        sig=request.headers["X-Agent-Sig"], body=request.content,
                        now=F["verify"][0]["now"])
    assert verdict["ok"], verdict


def test_passport_auth_picks_each_nodes_transfer_address_from_the_endpoint_list():
    auth = pg.PassportAuth(AGENT, PASSPORT, CHAIN, gonka_key=GONKA,
                           endpoints=[f"https://node1.example/v1;{NODE1}",
                                      f"https://node2.example/v1;{NODE2}"])
    seen, client = signed_requests(auth)
    with client:
        client.post("https://node1.example/v1/chat/completions", json={"n": 1})
        client.post("https://node2.example/v1/chat/completions", json={"n": 1})
        with pytest.raises(pg.PassportGateError, match="no endpoint in the list serves"):
            client.post("https://node3.example/v1/chat/completions", json={"n": 1})
    assert [r.headers["X-Transfer-Address"] for r in seen] == [NODE1, NODE2]
    assert seen[0].headers["Authorization"] != seen[1].headers["Authorization"]
    for r in seen:
        pg.gonka_verify(GONKA.public_key, {k: r.headers[k] for k in (
            "Authorization", "X-Requester-Address", "X-Timestamp", "X-Transfer-Address")},
            r.content, "unused")


def test_passport_auth_without_gonka_key_refuses_a_transfer_address():
    with pytest.raises(pg.PassportGateError, match="give gonka_key too"):
        pg.PassportAuth(AGENT, PASSPORT, CHAIN, transfer_address=NODE1)
    with pytest.raises(pg.PassportGateError, match="not both"):
        pg.PassportAuth(AGENT, PASSPORT, CHAIN, gonka_key=GONKA, transfer_address=NODE1,
                        endpoints=[])


def test_async_passport_auth_signs_the_bytes_it_sends():
    seen = []

    async def handler(request):
        await request.aread()
        seen.append(request)
        return httpx.Response(200, json={})

    async def run():
        auth = pg.PassportAuth(AGENT, PASSPORT, CHAIN, gonka_key=GONKA, transfer_address=NODE1)
        async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(handler)) as c:
            await c.post("https://node1.example/v1/chat/completions", json={"model": "m"})

    asyncio.run(run())
    (r,) = seen
    pg.gonka_verify(GONKA.public_key, {k: r.headers[k] for k in (
        "Authorization", "X-Requester-Address", "X-Timestamp", "X-Transfer-Address")},
        r.content, NODE2)
