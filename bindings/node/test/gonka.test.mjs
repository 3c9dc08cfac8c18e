// Native Gonka signing from Node: the bugs other clients have, the endpoint list, wrong
// arguments, and passportFetch sending both signatures over the bytes it sends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('../index.js');
const F = JSON.parse(readFileSync(new URL('../../../conformance/sdk-fixtures.json', import.meta.url), 'utf8'));
const NATIVE = Object.fromEntries(F.gonka_native.map((c) => [c.name, c]));
const AGENT = pg.AgentKey.fromKeyFile(F.agent_key.secret_hex);
const CHAIN = 'gonka-mainnet';
const PASSPORT = F.mint[0].passport;
const SECRET = 'b2'.repeat(32);
const GONKA = pg.PrincipalKey.fromKeyFile(SECRET);
const NODE1 = 'gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6';
const NODE2 = 'gonka14h0ycu78h88wzldxc7e79vhw5xsde0n85evmum';
const NATIVE_HEADERS = ['Authorization', 'X-Requester-Address', 'X-Timestamp', 'X-Transfer-Address'];

test('r and s are left-padded to 32 bytes', () => {
  const c = NATIVE.r_or_s_with_leading_zero_byte;
  const h = pg.gonkaSign(c.secret_hex, Buffer.from(c.body_base64, 'base64'), c.timestamp_ns, c.transfer_address);
  const sig = Buffer.from(h.Authorization, 'base64');
  assert.equal(sig.length, 64);
  assert.ok(sig[0] === 0 || sig[32] === 0);
  assert.equal(h.Authorization, c.authorization);
});

test('signing twice gives the same Authorization', () => {
  assert.deepEqual(pg.gonkaSign(SECRET, 'hello', 1765140000000000001n, NODE1), pg.gonkaSign(SECRET, 'hello', 1765140000000000001n, NODE1));
});

test('the signature is over one SHA-256 of the input, not two', () => {
  const h = pg.gonkaSign(GONKA, 'hello', 1765140000000000001n, NODE1);
  pg.gonkaVerify({ publicKey: GONKA.publicKey, headers: h, body: 'hello', nodeAddress: NODE1 });
  assert.throws(() => pg.gonkaVerify({ publicKey: GONKA.publicKey, headers: h, body: 'hello!', nodeAddress: NODE1 }), {
    name: 'PassportGateError',
    code: 'requester_sig_invalid',
    message: 'the signature does not verify over SHA-256 of hex(SHA-256(body)) || timestamp || transfer address',
  });
});

test('a key file path, a bare secret and a PrincipalKey sign alike', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'pg-gonka-')), 'gonka.json');
  GONKA.save(path);
  const a = pg.gonkaSign(path, 'x', 5n, NODE1);
  assert.deepEqual(pg.gonkaSign(`0x${SECRET}`, 'x', 5n, NODE1), a);
  assert.deepEqual(pg.gonkaSign(GONKA, 'x', 5n, NODE1), a);
});

test('wrong arguments are refused loudly', () => {
  assert.throws(() => pg.gonkaSigner('b2'.repeat(31)), { name: 'PassportGateError', message: /gonkaKey is neither a 64-hex-digit secret/ });
  assert.throws(() => pg.gonkaSigner(Buffer.from(SECRET, 'hex')), { name: 'TypeError', message: /gonkaKey must be/ });
  assert.throws(() => pg.gonkaSign(SECRET, 'x', 1765140000000000001, NODE1), { name: 'TypeError', message: /timestampNs must be a bigint or a decimal string/ });
  assert.throws(() => pg.gonkaSign(SECRET, 'x', '1.5e18', NODE1), { name: 'PassportGateError', message: /not the decimal form/ });
  assert.throws(() => pg.transferAddresses({ endpoints: `https://n.example/v1;${NODE1}` }), { name: 'TypeError', message: /endpoints must be an array/ });
});

test('parseEndpoint reads the URL and the transfer address', () => {
  assert.deepEqual(pg.parseEndpoint(`https://node1.example/v1;${NODE1}`), { url: 'https://node1.example/v1', transferAddress: NODE1 });
  assert.deepEqual(pg.parseEndpoint('https://node1.example/v1'), { url: 'https://node1.example/v1', transferAddress: null });
});

test('a bad transfer address names the entry and the prefix', () => {
  const entry = 'https://node1.example/v1;gonka1test';
  assert.throws(() => pg.parseEndpoint(entry), (e) => e.name === 'PassportGateError' && e.message.includes(entry));
  assert.throws(() => pg.transferAddresses({ transferAddress: NODE1, prefix: 'cosmos' }), { message: /not a cosmos1\.\.\. account address/ });
});

function recordingFetch() {
  const seen = [];
  const fetch = async (url, init) => {
    seen.push({ url, headers: new Headers(init.headers), body: new Uint8Array(init.body ? await new Response(init.body).arrayBuffer() : []) });
    return new Response('{}', { status: 200 });
  };
  return { seen, fetch };
}

function nativeOf(headers) {
  return Object.fromEntries(NATIVE_HEADERS.filter((n) => headers.has(n)).map((n) => [n, headers.get(n)]));
}

test('passportFetch sends both signatures over the bytes sent', async () => {
  const { seen, fetch } = recordingFetch();
  const f = pg.passportFetch({ agentKey: AGENT, passport: PASSPORT, chainId: CHAIN, gonkaKey: SECRET, transferAddress: NODE1, fetch });
  const body = JSON.stringify({ model: 'm', messages: [] });
  const stream = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode(body.slice(0, 7)));
      c.enqueue(new TextEncoder().encode(body.slice(7)));
      c.close();
    },
  });
  await f('https://node1.example/v1/chat/completions?trace=a%20b', { method: 'POST', body: stream, headers: { authorization: 'Bearer unused' } });
  const [r] = seen;
  assert.equal(new TextDecoder().decode(r.body), body);
  const native = nativeOf(r.headers);
  assert.equal(native['X-Transfer-Address'], NODE1);
  pg.gonkaVerify({ publicKey: GONKA.publicKey, headers: native, body: r.body, nodeAddress: NODE2 });
  const url = new URL(r.url);
  const verdict = pg.verify({
    chainId: CHAIN,
    method: 'POST',
    uri: url.pathname + url.search,
    passport: r.headers.get('X-Agent-Passport'),
    sig: r.headers.get('X-Agent-Sig'),
    body: r.body,
    now: F.verify[0].now,
  });
  assert.equal(verdict.ok, true, JSON.stringify(verdict));
});

test('passportFetch picks each node\'s transfer address from the endpoint list', async () => {
  const { seen, fetch } = recordingFetch();
  const endpoints = [`https://node1.example/v1;${NODE1}`, `https://node2.example/v1;${NODE2}`];
  const f = pg.passportFetch({ agentKey: AGENT, passport: PASSPORT, chainId: CHAIN, gonkaKey: GONKA, endpoints, fetch });
  await f('https://node1.example/v1/chat/completions', { method: 'POST', body: '{"n":1}' });
  await f('https://node2.example/v1/chat/completions', { method: 'POST', body: '{"n":1}' });
  await assert.rejects(f('https://node3.example/v1/chat/completions', { method: 'POST', body: '{}' }), {
    name: 'PassportGateError',
    message: /no endpoint in the list serves/,
  });
  assert.deepEqual(seen.map((r) => r.headers.get('X-Transfer-Address')), [NODE1, NODE2]);
  assert.notEqual(seen[0].headers.get('Authorization'), seen[1].headers.get('Authorization'));
  for (const r of seen) pg.gonkaVerify({ publicKey: GONKA.publicKey, headers: nativeOf(r.headers), body: r.body, nodeAddress: 'unused' });
});

test('passportFetch without gonkaKey refuses a transfer address', () => {
  assert.throws(() => pg.passportFetch({ agentKey: AGENT, passport: PASSPORT, chainId: CHAIN, transferAddress: NODE1 }), { message: /give gonkaKey too/ });
});

test('monotonicTimestampNs is a BigInt that never repeats', () => {
  const a = pg.monotonicTimestampNs();
  const b = pg.monotonicTimestampNs();
  assert.equal(typeof a, 'bigint');
  assert.ok(b > a && a > 1700000000000000000n);
});
