"""The official `openai` Python SDK, sync and async, streaming and not, through the real
`passport-gate serve` (replay protection on) in front of mockllm, signed by PassportAuth."""

import asyncio
import json
import uuid

import httpx
import openai
import pytest

import passport_gate as pg
from conftest import ALLOWED_MODEL, CHAIN


@pytest.fixture(scope="module")
def credentials():
    agent = pg.AgentKey.generate()
    passport = pg.mint(pg.PrincipalKey.generate(), agent_key=agent, agent_id="urn:aps:agent:pytest",
                       chain_id=CHAIN, ttl_seconds=600, models=[ALLOWED_MODEL])
    return agent, passport


def client(base_url, credentials, **kwargs):
    agent, passport = credentials
    http = openai.DefaultHttpxClient(auth=pg.PassportAuth(agent, passport, CHAIN))
    return openai.OpenAI(base_url=base_url, api_key="unused", http_client=http, **kwargs)


def async_client(base_url, credentials):
    agent, passport = credentials
    http = openai.DefaultAsyncHttpxClient(auth=pg.PassportAuth(agent, passport, CHAIN))
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", http_client=http)


def hello():
    # A distinct body for each call: identical body, URI and passport are one request to a
    # gateway with replay protection (see PassportAuth).
    return {"model": ALLOWED_MODEL, "messages": [{"role": "user", "content": "hello"}],
            "user": str(uuid.uuid4())}


def test_sync_request_is_accepted(gateway, credentials):
    answer = client(gateway.base_url, credentials).chat.completions.create(**hello())
    assert answer.choices[0].message.content == "hi from mockllm"


def test_sync_stream_is_accepted(gateway, credentials):
    stream = client(gateway.base_url, credentials).chat.completions.create(**hello(), stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "hi from mockllm"


def test_async_request_and_stream_are_accepted(gateway, credentials):
    async def run():
        c = async_client(gateway.base_url, credentials)
        answer = await c.chat.completions.create(**hello())
        stream = await c.chat.completions.create(**hello(), stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                        if chunk.choices])
        await c.close()
        return answer.choices[0].message.content, text

    assert asyncio.run(run()) == ("hi from mockllm", "hi from mockllm")


def test_passport_auth_signs_plain_httpx_requests_with_streamed_bodies(gateway, credentials):
    agent, passport = credentials
    auth = pg.PassportAuth(agent, passport, CHAIN)
    body = json.dumps(hello()).encode()

    def chunks():
        yield body[:10]
        yield body[10:]

    url = gateway.base_url + "/chat/completions?trace=a%20b"
    with httpx.Client(auth=auth) as c:
        r = c.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text

    async def run():
        async with httpx.AsyncClient(auth=auth) as c:
            return await c.post(url, json=hello())

    r = asyncio.run(run())
    assert r.status_code == 200, r.text


def test_a_model_outside_the_scope_is_an_sdk_error_with_our_code(gateway, credentials):
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(gateway.base_url, credentials, max_retries=0).chat.completions.create(
            **{**hello(), "model": "another-model"})
    assert e.value.status_code == 403
    assert e.value.code == "model_not_allowed"


def test_an_unsigned_request_is_refused(gateway):
    c = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(**hello())
    assert e.value.status_code == 401


def test_the_same_prompt_twice_needs_a_nonce_per_call(gateway, credentials):
    c = client(gateway.base_url, credentials, max_retries=0)
    body = hello()
    c.chat.completions.create(**body)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(**body)
    assert e.value.code == "request_replayed"
    for _ in range(2):
        c.chat.completions.create(**body, extra_query={"aps_nonce": uuid.uuid4().hex})


def test_a_retry_after_an_upstream_503_is_not_refused_as_a_replay(flaky_gateway, credentials):
    gateway, proxy = flaky_gateway
    c = client(gateway.base_url, credentials, max_retries=2)
    answer = c.chat.completions.create(**hello(), extra_query={"aps_nonce": uuid.uuid4().hex})
    assert answer.choices[0].message.content == "hi from mockllm"
    assert len(proxy.seen) == 2, "the SDK retried once, with the same signed request"
    assert proxy.seen[0].get("X-Agent-Sig") == proxy.seen[1].get("X-Agent-Sig"), \
        "the retry kept the call's nonce"
