"""The shared SDK fixtures (conformance/sdk-fixtures.json), byte for byte: the Rust test
(crates/passport-core/tests/core/sdk_fixtures.rs) and node:test check the same file."""

import base64
import json

import pytest

import passport_gate as pg
from conftest import FIXTURES

F = json.loads(FIXTURES.read_text(encoding="utf-8"))
AGENT = pg.AgentKey.from_key_file(F["agent_key"]["secret_hex"])
PRINCIPAL = pg.PrincipalKey.from_key_file(F["principal_key"]["secret_hex"])


def mint_kwargs(options: dict) -> dict:
    kwargs = dict(options)
    kwargs["agent_pubkey"] = kwargs.pop("agent_pubkey")
    return kwargs


def test_keys_and_key_files_match():
    assert AGENT.public_key == F["agent_key"]["public_key"]
    assert AGENT.key_file() == F["agent_key"]["key_file"]
    assert pg.AgentKey.from_key_file(F["agent_key"]["key_file"]).public_key == AGENT.public_key
    assert PRINCIPAL.public_key == F["principal_key"]["public_key"]
    assert PRINCIPAL.address() == F["principal_key"]["address"]
    assert PRINCIPAL.key_file() == F["principal_key"]["key_file"]


@pytest.mark.parametrize("case", F["mint"], ids=[c["name"] for c in F["mint"]])
def test_minted_passports_match(case):
    passport = pg.mint(PRINCIPAL, **mint_kwargs(case["options"]))
    assert passport == case["passport"]
    assert pg.inspect(passport)["passport_id"] == case["passport_id"]


@pytest.mark.parametrize("case", F["refusals"], ids=[c["name"] for c in F["refusals"]])
def test_refusals_carry_the_cli_message(case):
    with pytest.raises(pg.PassportGateError) as e:
        pg.mint(PRINCIPAL, **mint_kwargs(case["options"]))
    assert str(e.value) == case["error"]


def test_wallet_flow_matches():
    u = F["unsigned"]
    options = mint_kwargs(u["options"])
    result = pg.mint_unsigned(options.pop("principal_pubkey"), **options)
    assert result == u["result"]
    assert pg.attach_signature(result["envelope"], u["wallet_signature"]) == u["passport"]


@pytest.mark.parametrize("case", F["requests"], ids=[c["name"] for c in F["requests"]])
def test_request_signatures_match(case):
    passport = F["mint"][case["passport"]]["passport"]
    body = base64.b64decode(case["body_base64"])
    args = (passport, case["chain_id"], case["method"], case["uri"], body)
    assert pg.sign_request(AGENT, *args) == case["sig"]
    assert pg.headers(AGENT, *args) == {"X-Agent-Passport": passport, "X-Agent-Sig": case["sig"]}
    assert pg.Signer(AGENT, passport, case["chain_id"]).sign(
        case["method"], case["uri"], body) == case["sig"]


@pytest.mark.parametrize("case", F["verify"], ids=[c["name"] for c in F["verify"]])
def test_verdicts_match(case):
    r = F["requests"][case["request"]]
    verdict = pg.verify(chain_id=r["chain_id"], method=r["method"], uri=r["uri"],
                        passport=F["mint"][r["passport"]]["passport"], sig=r["sig"],
                        body=base64.b64decode(r["body_base64"]), now=case["now"])
    assert verdict == case["verdict"]


def test_a_foreign_agent_key_cannot_sign():
    with pytest.raises(pg.PassportGateError, match="does not match the passport's agent_pubkey"):
        pg.Signer(pg.AgentKey.generate(), F["mint"][0]["passport"], "gonka-mainnet")


def test_saved_key_files_load_back_and_are_never_overwritten(tmp_path):
    path = tmp_path / "agent.json"
    key = pg.AgentKey.generate()
    key.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert pg.AgentKey.load(path).public_key == key.public_key
    with pytest.raises(pg.PassportGateError, match="must not exist yet"):
        pg.AgentKey.generate().save(path)
    principal = tmp_path / "principal.json"
    pg.PrincipalKey.generate().save(principal)
    with pytest.raises(pg.PassportGateError, match="not a Agent key"):
        pg.AgentKey.load(principal)


@pytest.mark.parametrize("case", F["gonka_native"], ids=[c["name"] for c in F["gonka_native"]])
def test_gonka_native_signatures_match(case):
    body = base64.b64decode(case["body_base64"])
    headers = pg.gonka_sign(case["secret_hex"], body, int(case["timestamp_ns"]),
                            case["transfer_address"], prefix=case["prefix"])
    expected = {"Authorization": case["authorization"], "X-Requester-Address": case["address"],
                "X-Timestamp": case["timestamp_ns"]}
    if case["transfer_address"]:
        expected["X-Transfer-Address"] = case["transfer_address"]
    assert headers == expected
    assert list(headers) == list(expected)
    assert pg.gonka_address(case["secret_hex"], case["prefix"]) == case["address"]
    # The decimal string is taken as is: no float on the way.
    assert pg.gonka_sign(case["secret_hex"], body, case["timestamp_ns"], case["transfer_address"],
                         prefix=case["prefix"]) == headers


@pytest.mark.parametrize("mint", [pg.mint, None], ids=["mint", "mint_unsigned"])
def test_models_must_be_a_list_not_a_string(mint):
    # A string is a sequence of one-character strings: minting it would allow "q", "w", ...
    agent = pg.AgentKey.generate()
    kwargs = dict(agent_key=agent, agent_id="urn:aps:agent:a", chain_id="gonka-test",
                  ttl_seconds=60, models="qwen/qwen3-32b")
    with pytest.raises(pg.PassportGateError) as refused:
        if mint is None:
            pg.mint_unsigned(PRINCIPAL.public_key, **kwargs)
        else:
            mint(PRINCIPAL, **kwargs)
    assert str(refused.value) == (
        "models must be a list of model names, not a string: models=['qwen/qwen3-32b']")
    with pytest.raises(pg.PassportGateError, match="not int 7"):
        pg.mint(PRINCIPAL, **dict(kwargs, models=["m", 7]))
    minted = pg.inspect(pg.mint(PRINCIPAL, **dict(kwargs, models=("qwen/qwen3-32b",))))
    assert minted["envelope"]["scope"]["allowed_models"] == ["qwen/qwen3-32b"]
