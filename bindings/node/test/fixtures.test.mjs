// The shared SDK fixtures (conformance/sdk-fixtures.json), byte for byte: the Rust test
// (crates/passport-core/tests/core/sdk_fixtures.rs) and pytest check the same file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('../index.js');
const F = JSON.parse(readFileSync(new URL('../../../conformance/sdk-fixtures.json', import.meta.url), 'utf8'));
const AGENT = pg.AgentKey.fromKeyFile(F.agent_key.secret_hex);
const PRINCIPAL = pg.PrincipalKey.fromKeyFile(F.principal_key.secret_hex);

function options(o) {
  return {
    chainId: o.chain_id,
    agentId: o.agent_id,
    agentPubkey: o.agent_pubkey,
    ttlSeconds: o.ttl_seconds,
    expiresAt: o.expires_at,
    notBefore: o.not_before,
    issuedAt: o.issued_at,
    models: o.models,
    beneficiary: o.beneficiary,
  };
}

test('keys and key files match', () => {
  assert.equal(AGENT.publicKey, F.agent_key.public_key);
  assert.equal(AGENT.keyFile(), F.agent_key.key_file);
  assert.equal(pg.AgentKey.fromKeyFile(F.agent_key.key_file).publicKey, AGENT.publicKey);
  assert.equal(PRINCIPAL.publicKey, F.principal_key.public_key);
  assert.equal(PRINCIPAL.address(), F.principal_key.address);
  assert.equal(PRINCIPAL.keyFile(), F.principal_key.key_file);
});

for (const c of F.mint) {
  test(`minted passport matches: ${c.name}`, () => {
    const passport = pg.mint(PRINCIPAL, options(c.options));
    assert.equal(passport, c.passport);
    assert.equal(pg.inspect(passport).passport_id, c.passport_id);
  });
}

// The CLI's refusals (c.error) in this package's words: its option names (ttlSeconds, not
// ttl_seconds or --max-ttl-seconds), with a stable code.
const NODE_REFUSALS = {
  lifetime_over_max_ttl: ['lifetime_too_long', "the passport would live 3601 s, more than the 3600 s a verifier accepts (raise maxTtlSeconds only if the gateway's max_ttl_seconds is raised too)"],
  expiry_not_after_issue: ['expiry_not_after_issue', 'expiresAt (2026-05-21T12:00:00Z) must be after issuedAt (2026-05-21T12:00:00Z)'],
  no_expiry: ['no_expiry', 'give ttlSeconds or expiresAt'],
  control_character_in_beneficiary: ['beneficiary_invalid', 'the beneficiary must be at most 255 bytes with no control characters'],
  empty_chain_id: ['chain_id_empty', 'the chain id must not be empty'],
};

for (const c of F.refusals) {
  test(`refusal carries a code and the CLI message in Node's names: ${c.name}`, () => {
    assert.ok(c.name in NODE_REFUSALS, `add ${c.name} to NODE_REFUSALS (the CLI says: ${c.error})`);
    const [code, message] = NODE_REFUSALS[c.name];
    assert.throws(() => pg.mint(PRINCIPAL, options(c.options)), (e) => {
      assert.ok(e instanceof pg.PassportGateError);
      assert.equal(e.code, code);
      assert.equal(e.message, message);
      return true;
    });
  });
}

test('wallet flow matches', () => {
  const u = F.unsigned;
  const result = pg.mintUnsigned(u.options.principal_pubkey, options(u.options));
  assert.deepEqual(result, u.result);
  assert.equal(pg.attachSignature(result.envelope, u.wallet_signature), u.passport);
});

for (const c of F.requests) {
  test(`request signature matches: ${c.name}`, () => {
    const passport = F.mint[c.passport].passport;
    const body = new Uint8Array(Buffer.from(c.body_base64, 'base64'));
    const args = [passport, c.chain_id, c.method, c.uri, body];
    assert.equal(pg.signRequest(AGENT, ...args), c.sig);
    assert.deepEqual(pg.headers(AGENT, ...args), { 'X-Agent-Passport': passport, 'X-Agent-Sig': c.sig });
    assert.equal(new pg.Signer(AGENT, passport, c.chain_id).sign(c.method, c.uri, body.buffer), c.sig);
  });
}

for (const c of F.verify) {
  test(`verdict matches: ${c.name}`, () => {
    const r = F.requests[c.request];
    const verdict = pg.verify({
      chainId: r.chain_id,
      method: r.method,
      uri: r.uri,
      passport: F.mint[r.passport].passport,
      sig: r.sig,
      body: Buffer.from(r.body_base64, 'base64'),
      now: c.now,
    });
    assert.deepEqual(verdict, c.verdict);
  });
}

test('a foreign agent key cannot sign', () => {
  assert.throws(() => new pg.Signer(pg.AgentKey.generate(), F.mint[0].passport, 'gonka-mainnet'), {
    name: 'PassportGateError',
    message: "the agent key does not match the passport's agent_pubkey",
  });
});

test('saved key files load back and are never overwritten', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pg-keys-'));
  const path = join(dir, 'agent.json');
  const key = pg.AgentKey.generate();
  key.save(path);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(pg.AgentKey.load(path).publicKey, key.publicKey);
  assert.throws(() => pg.AgentKey.generate().save(path), { name: 'PassportGateError', message: /must not exist yet/ });
});

for (const c of F.gonka_native) {
  test(`gonka native signature matches: ${c.name}`, () => {
    const body = new Uint8Array(Buffer.from(c.body_base64, 'base64'));
    const expected = { Authorization: c.authorization, 'X-Requester-Address': c.address, 'X-Timestamp': c.timestamp_ns };
    if (c.transfer_address) expected['X-Transfer-Address'] = c.transfer_address;
    // The decimal string and its BigInt sign alike; no JS number on the way.
    for (const ts of [c.timestamp_ns, BigInt(c.timestamp_ns)]) {
      const headers = pg.gonkaSign(c.secret_hex, body, ts, c.transfer_address, c.prefix);
      assert.deepEqual(headers, expected);
      assert.deepEqual(Object.keys(headers), Object.keys(expected));
    }
    assert.equal(pg.gonkaAddress(c.secret_hex, c.prefix), c.address);
  });
}
