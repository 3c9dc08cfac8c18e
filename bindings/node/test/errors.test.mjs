// Errors a Node user reads (issue 23): a PassportGateError with a stable `code` and a
// one-line message in this package's names (camelCase options), never a Rust field
// name or a position in JSON the caller never wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('../index.js');
const AGENT = pg.AgentKey.generate();
const PRINCIPAL = pg.PrincipalKey.generate();
const BASE = { agentKey: AGENT, agentId: 'urn:aps:agent:errors', chainId: 'gonka-test', ttlSeconds: 60 };

function refuses(fn, code, message) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof pg.PassportGateError, `${e.name}: ${e.message}`);
    assert.equal(e.name, 'PassportGateError');
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    assert.doesNotMatch(e.message, /\n| at line \d+ column \d+|\[[a-z_]+\]/);
    return true;
  });
}

const MINT_CASES = [
  ['a string for models', { models: 'qwen/qwen3-32b' }, 'invalid_option', 'models must be an array of model names, not a string: models: ["qwen/qwen3-32b"]'],
  ['a number among models', { models: ['m', 7] }, 'invalid_option', 'models[1] must be a model name (a string), not number "7"'],
  ['no chainId', { chainId: undefined }, 'invalid_option', 'chainId must be a string, not missing'],
  ['a number for agentId', { agentId: 42 }, 'invalid_option', 'agentId must be a string, not number "42"'],
  ['ttlSeconds as text', { ttlSeconds: '60' }, 'invalid_option', 'ttlSeconds must be a whole number, not string "60"'],
  ['a fractional ttlSeconds', { ttlSeconds: 1.5 }, 'invalid_option', 'ttlSeconds must be a whole number, not number "1.5"'],
  ['a negative maxTtlSeconds', { maxTtlSeconds: -1 }, 'invalid_option', 'maxTtlSeconds must be a whole number of at least 0, not number "-1"'],
  ['an invalid Date', { ttlSeconds: undefined, expiresAt: new Date('nope') }, 'invalid_option', 'expiresAt is an invalid Date'],
  ['ttlSeconds and expiresAt', { expiresAt: '2030-01-01T00:00:00Z' }, 'ttl_and_expiry', 'give ttlSeconds or expiresAt, not both'],
  ['no expiry', { ttlSeconds: undefined }, 'no_expiry', 'give ttlSeconds or expiresAt'],
  ['a zero ttl', { ttlSeconds: 0 }, 'ttl_not_positive', 'ttlSeconds 0: must be positive'],
  ['a long ttl', { ttlSeconds: 7200 }, 'lifetime_too_long', "the passport would live 7200 s, more than the 3600 s a verifier accepts (raise maxTtlSeconds only if the gateway's max_ttl_seconds is raised too)"],
  ['an unparsable notBefore', { notBefore: 'soon' }, 'time_invalid', 'notBefore: not an RFC 3339 timestamp: too short'],
  ['notBefore after expiry', { issuedAt: '2030-01-01T00:00:00Z', notBefore: '2030-01-01T00:05:00Z' }, 'never_valid', 'notBefore must be before expiresAt, or the passport is never valid'],
  ['a past-9999 expiry', { issuedAt: '9999-12-31T23:30:00Z', ttlSeconds: 3600 }, 'expiry_after_latest', 'issuedAt + ttlSeconds is after 9999-12-31T23:59:59.999999999Z, the latest time a passport can hold (a year has four digits): give a shorter ttlSeconds'],
  ['a bad agentPubkey', { agentKey: undefined, agentPubkey: 'AAAA' }, 'agent_pubkey_invalid', 'agentPubkey is not base64 of a valid Ed25519 key'],
  ['both agentKey and agentPubkey', { agentPubkey: AGENT.publicKey }, 'invalid_option', 'give agentKey or agentPubkey'],
  ['an empty chainId', { chainId: '' }, 'chain_id_empty', 'the chain id must not be empty'],
];

for (const [name, change, code, message] of MINT_CASES) {
  test(`mint refuses ${name}: ${code}`, () => {
    refuses(() => pg.mint(PRINCIPAL, { ...BASE, ...change }), code, message);
  });
}

test('mintUnsigned refuses a string for models and a bad principalPubkey', () => {
  refuses(() => pg.mintUnsigned(PRINCIPAL.publicKey, { ...BASE, models: 'm' }), 'invalid_option', 'models must be an array of model names, not a string: models: ["m"]');
  refuses(() => pg.mintUnsigned('AAAA', BASE), 'principal_pubkey_invalid', 'principalPubkey is not base64 of a compressed secp256k1 key');
});

test('verify names its options and never shows JSON positions', () => {
  const passport = pg.mint(PRINCIPAL, BASE);
  const body = '{"model":"m","messages":[]}';
  const sig = pg.signRequest(AGENT, passport, 'gonka-test', 'POST', '/v1/chat/completions', body);
  const ok = { chainId: 'gonka-test', method: 'POST', uri: '/v1/chat/completions', passport, sig, body };
  assert.deepEqual(pg.verify(ok).ok, true, JSON.stringify(pg.verify(ok)));
  refuses(() => pg.verify({ ...ok, uri: 'http://h/v1/chat/completions' }), 'uri_not_origin_form', 'uri "http://h/v1/chat/completions": expected an origin-form target (/path?query, no scheme, host or #fragment)');
  refuses(() => pg.verify({ ...ok, sig: undefined }), 'invalid_option', 'sig must be a string, not missing');
  refuses(() => pg.verify({ ...ok, now: 'yesterday' }), 'time_invalid', 'now: not an RFC 3339 timestamp: too short');
});

test('keys, signers and passports refuse with codes', () => {
  refuses(() => pg.AgentKey.fromKeyFile('{"kind": "agent"}'), 'not_a_key_file', 'the key file text is not a key file: missing field `key_type`');
  refuses(() => pg.AgentKey.fromKeyFile('abc'), 'secret_not_hex', 'the key file text: the secret must be exactly 64 hex digits');
  refuses(() => pg.AgentKey.load('/nonexistent/agent.json'), 'key_file_unreadable', 'cannot read key file /nonexistent/agent.json: No such file or directory (os error 2)');
  refuses(() => new pg.Signer(AGENT, 'not base64!', 'gonka-test'), 'passport_not_base64', 'the passport is not strict standard base64');
  refuses(() => new pg.Signer(pg.AgentKey.generate(), pg.mint(PRINCIPAL, BASE), 'gonka-test'), 'agent_key_mismatch', "the agent key does not match the passport's agent_pubkey");
  refuses(() => pg.inspect(Buffer.from('{"v":').toString('base64')), 'passport_not_json', 'the passport is not JSON: EOF while parsing a value');
  refuses(() => pg.gonkaSign('0'.repeat(63), '', 1n), 'neither_secret_nor_key_file', 'gonkaKey is neither a 64-hex-digit secret key nor the path of an existing key file');
  refuses(() => pg.transferAddresses({ endpoints: ['nope;x'] }), 'endpoint_url_not_absolute', 'endpoint "nope;x": the URL must be absolute, http:// or https:// ("url;transfer_address")');
});

test('arguments of the wrong type throw a TypeError with code invalid_argument, naming the argument', () => {
  const passport = pg.mint(PRINCIPAL, BASE);
  const cases = [
    [() => pg.mint('not a key', BASE), 'principalKey must be a PrincipalKey (PrincipalKey.generate(), .load(path) or .fromKeyFile(text)), not string "not a key"'],
    [() => pg.signRequest(AGENT, 42, 'gonka-test', 'GET', '/', ''), 'passport must be a string, not number "42"'],
    [() => pg.signRequest({}, passport, 'gonka-test', 'GET', '/', ''), 'agentKey must be an AgentKey (AgentKey.generate(), .load(path) or .fromKeyFile(text)), not an object'],
    [() => new pg.Signer(AGENT, passport, undefined), 'chainId must be a string, not undefined'],
    [() => new pg.Signer(AGENT, passport, 'gonka-test').sign('GET', null, ''), 'uri must be a string, not null'],
    [() => pg.AgentKey.load(undefined), 'path must be a string, not undefined'],
    [() => pg.PrincipalKey.fromKeyFile(7), 'text must be a string, not number "7"'],
    [() => pg.inspect(passport, 5), 'prefix must be a string, not number "5"'],
    [() => pg.gonkaSign(PRINCIPAL, '', 5), 'timestampNs must be a bigint or a decimal string, not number (a number cannot hold nanoseconds)'],
  ];
  for (const [fn, message] of cases) {
    assert.throws(fn, (e) => {
      assert.equal(e.name, 'TypeError', e.message);
      assert.equal(e.code, 'invalid_argument');
      assert.equal(e.message, message);
      return true;
    });
  }
  refuses(() => pg.signRequest(AGENT, passport, 'gonka-test', 'POST', '/', 5), 'invalid_argument', 'the body must be a string, a Uint8Array, an ArrayBuffer or a view of one, not number "5"');
});
