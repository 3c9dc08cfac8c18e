"""Issue 21: the openai SDK signing both ways (passport and Gonka's native signature)
against a stand-in Gonka API node (tests/gonka_standin.py, written from the public
description and checked with the `ecdsa` package, not with passport_gate), directly and
through the real `passport-gate serve` with `requester_signature = "gonka"` and a stand-in
chain node; then each refusal, at the gateway and at the node."""

from __future__ import annotations

import base64
import uuid
from typing import Callable, Dict, Iterator, List, Tuple

import openai
import pytest

import gonka_standin as standin
import passport_gate as pg
from conftest import CHAIN, start_gateway, stop

MODEL = "qwen/qwen3-32b"
# Secrets of the test's accounts (secp256k1, 32 bytes hex).
PRINCIPAL = "c1" * 32      # mints the passport; granted REQUESTER
REQUESTER = "c2" * 32      # signs natively for PRINCIPAL's passport
STRANGER = "c3" * 32       # has a key on chain but no grant from PRINCIPAL
KEYLESS = "c4" * 32        # a principal whose account has no public key on chain
NODE = "c5" * 32           # the API node's own account (its transfer address)
STALE_NS = 60 * 1_000_000_000


def addr(secret: str) -> str:
    return standin.address(standin.public_key(secret))


@pytest.fixture(scope="module")
def node() -> Iterator[standin.GonkaNode]:
    """The stand-in API node; the keys of PRINCIPAL, REQUESTER and STRANGER are on its chain."""
    n = standin.GonkaNode(addr(NODE))
    for secret in (PRINCIPAL, REQUESTER, STRANGER):
        n.register(standin.public_key(secret))
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module")
def chain() -> Iterator[standin.ChainNode]:
    """The stand-in chain node: accounts with keys, KEYLESS without, PRINCIPAL → REQUESTER."""
    c = standin.ChainNode()
    for secret in (PRINCIPAL, REQUESTER, STRANGER):
        c.account(standin.public_key(secret))
    c.account(None, addr(KEYLESS))
    c.grants.add((addr(PRINCIPAL), addr(REQUESTER)))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def gateway(node, chain, tmp_path_factory):
    """The real gateway, replay protection on, verifying the requester's native signature."""
    g = start_gateway(tmp_path_factory.mktemp("gateway-gonka"), node.url, extra=f"""
[binding]
chain_node = "{chain.url}"
requester_header = "X-Requester-Address"
requester_signature = "gonka"
transfer_address = "{node.own_address}"
""")
    try:
        yield g
    finally:
        stop(g.proc)


@pytest.fixture(scope="module")
def agent() -> pg.AgentKey:
    return pg.AgentKey.generate()


def passport_of(secret: str, agent: pg.AgentKey) -> str:
    return pg.mint(pg.PrincipalKey.from_key_file(secret), agent_key=agent,
                   agent_id="urn:aps:agent:gonka-node", chain_id=CHAIN, ttl_seconds=600)


@pytest.fixture(scope="module")
def passport(agent) -> str:
    return passport_of(PRINCIPAL, agent)


class NativeAuth(pg.PassportAuth):
    """The passport headers as PassportAuth signs them, then the native headers that
    `native(body_sent)` returns: lets a test sign something other than what it sends."""

    def __init__(self, agent, passport: str, native: Callable[[bytes], Dict[str, str]]):
        super().__init__(agent, passport, CHAIN)
        self._native = native

    def _sign(self, request):
        request = super()._sign(request)
        for name, value in self._native(request.content).items():
            request.headers[name] = value
        return request


def sdk(base_url: str, auth) -> Tuple[openai.OpenAI, List[Dict[str, str]]]:
    """The real openai SDK (no retries) with `auth`; the list collects the headers sent."""
    sent: List[Dict[str, str]] = []

    def record(response) -> None:
        sent.append(dict(response.request.headers))

    http = openai.DefaultHttpxClient(auth=auth, event_hooks={"response": [record]})
    return openai.OpenAI(base_url=base_url, api_key="unused", http_client=http,
                         max_retries=0), sent


def chat(client: openai.OpenAI):
    # A distinct body each call (the gateway has replay protection on).
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there node"}],
        user=str(uuid.uuid4()))


def refused(client: openai.OpenAI) -> Tuple[int, str]:
    with pytest.raises(openai.APIStatusError) as e:
        chat(client)
    return e.value.status_code, e.value.code


def both(agent, passport: str, transfer: str) -> pg.PassportAuth:
    return pg.PassportAuth(agent, passport, CHAIN, gonka_key=REQUESTER, transfer_address=transfer)


NATIVE = ("authorization", "x-requester-address", "x-timestamp", "x-transfer-address")


# ---- the stand-in itself ----


def test_the_standin_reproduces_the_published_fixtures():
    # gonka-deployments.md section 2: the zeph fixtures, independent of passport_gate.
    one = standin.public_key("00" * 31 + "01")
    assert standin.address(one) == "gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6"
    n_minus_1 = "%064x" % (standin.ecdsa.SECP256k1.order - 1)
    assert standin.address(standin.public_key(n_minus_1)) == \
        "gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum"
    assert standin.ripemd160(b"").hex() == "9c1185a5c5e9fc54612808977ee8f548b2258d31"
    assert standin.ripemd160(b"abc").hex() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
    n = standin.GonkaNode("gonka1test")
    try:
        n.register(one)
        headers = {"Authorization": "/x6JuvqXWpT9YNgjYt0eNLxK8nDjccY/VyJrDn4bGjNbWWu3Px9doIlU"
                                    "QUOOf2Eu7SqyZ4oyGlDoY+4XpGA2JQ==",
                   "X-Requester-Address": standin.address(one), "X-Timestamp": "1000000000",
                   "X-Transfer-Address": "gonka1test"}
        with pytest.raises(standin.Refusal, match="window"):
            n.check(headers, b"hello")   # signed in 1970
        old, standin.WINDOW_NS = standin.WINDOW_NS, 1 << 80
        try:
            n.check(headers, b"hello")
            with pytest.raises(standin.Refusal) as r:
                n.check(headers, b"hello")
            assert r.value.code == "signature_reused"
            headers["Authorization"] = "NyKMAuRc/FRjptcjm94Q3Fqeevcl2fJUeb0Dxwh1HZpH7sgFk7ajJdBPt8FV" \
                                       "a1mxG5OY623oKNb6xkGerdqIiw=="
            with pytest.raises(standin.Refusal) as r:
                n.check(headers, b"hello")
            assert r.value.code == "invalid_signature"
        finally:
            standin.WINDOW_NS = old
    finally:
        n.close()


def test_the_binding_and_the_standin_agree_on_every_address():
    for secret in (PRINCIPAL, REQUESTER, STRANGER, KEYLESS, NODE):
        assert pg.gonka_address(secret) == addr(secret)
        assert pg.PrincipalKey.from_key_file(secret).public_key == \
            base64.b64encode(standin.public_key(secret)).decode()


# ---- directly against the stand-in node ----


def test_openai_sdk_with_both_signatures_gets_200_and_usage_from_the_node(node, agent, passport):
    client, sent = sdk(node.url + "/v1", both(agent, passport, node.own_address))
    before = len(node.requests)
    answer = chat(client)
    assert answer.choices[0].message.content == "hi from the stand-in node"
    assert answer.usage.prompt_tokens == 3 and answer.usage.total_tokens == 8
    assert len(node.requests) == before + 1
    seen, body = node.requests[-1]
    assert seen["x-agent-passport"] == passport and seen["x-agent-sig"]
    assert not seen["authorization"].startswith("Bearer")
    assert seen["x-requester-address"] == addr(REQUESTER)
    assert seen["x-transfer-address"] == node.own_address
    for name in NATIVE:
        assert seen[name] == sent[-1][name]
    verdict = pg.verify(chain_id=CHAIN, method="POST", uri="/v1/chat/completions",
                        passport=seen["x-agent-passport"], sig=seen["x-agent-sig"], body=body)
    assert verdict["ok"], verdict


def test_the_node_signs_with_its_own_address_when_no_transfer_address_is_sent(node, agent,
                                                                               passport):
    def without_header(transfer):
        def native(body):
            headers = pg.gonka_sign(REQUESTER, body, standin.now_ns(), transfer)
            headers.pop("X-Transfer-Address", None)
            return headers
        return native

    client, sent = sdk(node.url + "/v1", NativeAuth(agent, passport,
                                                     without_header(node.own_address)))
    assert chat(client).usage.total_tokens == 8
    assert "x-transfer-address" not in sent[-1]
    client, _ = sdk(node.url + "/v1", NativeAuth(agent, passport, without_header(addr("c6" * 32))))
    assert refused(client) == (401, "invalid_signature")


def test_the_node_refuses_a_tampered_body(node, agent, passport):
    def tampered(body):
        return pg.gonka_sign(REQUESTER, body.replace(b"hello", b"HELLO"), standin.now_ns(),
                             node.own_address)

    client, _ = sdk(node.url + "/v1", NativeAuth(agent, passport, tampered))
    assert refused(client) == (401, "invalid_signature")


@pytest.mark.parametrize("offset_ns", [-STALE_NS, STALE_NS])
def test_the_node_refuses_a_timestamp_outside_ten_seconds(node, agent, passport, offset_ns):
    def stale(body):
        return pg.gonka_sign(REQUESTER, body, standin.now_ns() + offset_ns, node.own_address)

    client, _ = sdk(node.url + "/v1", NativeAuth(agent, passport, stale))
    assert refused(client) == (401, "timestamp_out_of_window")


def test_the_node_refuses_a_reused_authorization(node, agent, passport):
    fixed = {"model": MODEL, "messages": [{"role": "user", "content": "twice"}],
             "user": str(uuid.uuid4())}
    client, sent = sdk(node.url + "/v1", both(agent, passport, node.own_address))
    client.chat.completions.create(**fixed)
    first = {k: v for k, v in sent[-1].items() if k in NATIVE}
    client, _ = sdk(node.url + "/v1", NativeAuth(agent, passport, lambda body: first))
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**fixed)
    assert (e.value.status_code, e.value.code) == (401, "signature_reused")


def test_the_node_refuses_a_requester_without_a_key(node, agent):
    keyless = passport_of(KEYLESS, agent)
    auth = pg.PassportAuth(agent, keyless, CHAIN, gonka_key=KEYLESS,
                           transfer_address=node.own_address)
    client, _ = sdk(node.url + "/v1", auth)
    assert refused(client) == (401, "unknown_requester")


# ---- through the gateway (requester_signature = "gonka") ----


def test_openai_sdk_with_both_signatures_gets_200_through_the_gateway(gateway, node, chain,
                                                                      agent, passport):
    client, sent = sdk(gateway.base_url, both(agent, passport, node.own_address))
    before = len(node.requests)
    answer = chat(client)
    assert answer.choices[0].message.content == "hi from the stand-in node"
    assert answer.usage.total_tokens == 8
    # The node verified the native signature again: the gateway forwarded it unchanged.
    assert len(node.requests) == before + 1
    seen, _ = node.requests[-1]
    for name in NATIVE:
        assert seen[name] == sent[-1][name], name
    assert seen["x-aps-requester-address"] == addr(REQUESTER)
    # The gateway asked the chain node for the requester's key and for the grant.
    assert f"/cosmos/auth/v1beta1/accounts/{addr(REQUESTER)}" in chain.queries
    assert any(q.startswith("/cosmos/authz/v1beta1/grants?") and addr(PRINCIPAL) in q
               and addr(REQUESTER) in q and "msg_type_url=" in q for q in chain.queries)


def test_the_gateway_refuses_a_tampered_body(gateway, node, agent, passport):
    def tampered(body):
        return pg.gonka_sign(REQUESTER, body.replace(b"hello", b"HELLO"), standin.now_ns(),
                             node.own_address)

    before = len(node.requests)
    client, _ = sdk(gateway.base_url, NativeAuth(agent, passport, tampered))
    assert refused(client) == (401, "requester_sig_invalid")
    assert len(node.requests) == before


def test_the_gateway_refuses_a_stale_timestamp(gateway, node, agent, passport):
    def stale(body):
        return pg.gonka_sign(REQUESTER, body, standin.now_ns() - STALE_NS, node.own_address)

    before = len(node.requests)
    client, _ = sdk(gateway.base_url, NativeAuth(agent, passport, stale))
    assert refused(client) == (401, "requester_timestamp_out_of_window")
    assert len(node.requests) == before


def test_the_gateway_refuses_the_same_authorization_twice(gateway, node, agent, passport):
    first: List[Dict[str, str]] = []

    def once(body):
        # Signed once: the second call (same body, another URI, so another passport
        # signature) re-sends the first Authorization.
        if not first:
            first.append(pg.gonka_sign(REQUESTER, body, standin.now_ns(), node.own_address))
        return first[0]

    client, sent = sdk(gateway.base_url, NativeAuth(agent, passport, once))
    fixed = {"model": MODEL, "messages": [{"role": "user", "content": "twice"}],
             "user": str(uuid.uuid4())}
    before = len(node.requests)
    client.chat.completions.create(**fixed, extra_query={"aps_nonce": uuid.uuid4().hex})
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**fixed, extra_query={"aps_nonce": uuid.uuid4().hex})
    assert (e.value.status_code, e.value.code) == (401, "requester_sig_replayed")
    assert sent[0]["authorization"] == sent[1]["authorization"]
    assert sent[0]["x-agent-sig"] != sent[1]["x-agent-sig"]
    assert len(node.requests) == before + 1


def test_the_gateway_refuses_a_requester_without_a_public_key(gateway, node, agent):
    keyless = passport_of(KEYLESS, agent)
    auth = pg.PassportAuth(agent, keyless, CHAIN, gonka_key=KEYLESS,
                           transfer_address=node.own_address)
    before = len(node.requests)
    client, _ = sdk(gateway.base_url, auth)
    assert refused(client) == (401, "requester_pubkey_unknown")
    assert len(node.requests) == before


def test_the_gateway_refuses_a_requester_without_a_grant(gateway, node, agent, passport):
    auth = pg.PassportAuth(agent, passport, CHAIN, gonka_key=STRANGER,
                           transfer_address=node.own_address)
    before = len(node.requests)
    client, _ = sdk(gateway.base_url, auth)
    assert refused(client) == (403, "principal_mismatch")
    assert len(node.requests) == before
