// passportFetch and redirects (issue 22 item 14), against real HTTP servers on loopback:
// origin A answers redirects (to itself or to origin B), and each origin records every
// request it received. The passport and signature never reach B; a redirect within A is
// followed with a signature for its new URI, which the verifier accepts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('../index.js');
const CHAIN = 'gonka-test';
const AGENT = pg.AgentKey.generate();
const PASSPORT = pg.mint(pg.PrincipalKey.generate(), { agentKey: AGENT, agentId: 'urn:aps:agent:redirects', chainId: CHAIN, ttlSeconds: 600 });
const BODY = '{"model":"m","messages":[{"role":"user","content":"hello"}]}';

function origin() {
  const o = { received: [], redirects: new Map() };
  o.server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      o.received.push({ method: req.method, target: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const redirect = o.redirects.get(req.url.split('?')[0]);
      if (redirect) {
        res.writeHead(redirect[0], { location: redirect[1], 'content-length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  return o;
}

const A = origin();
const B = origin();

before(async () => {
  for (const o of [A, B]) {
    await new Promise((r) => o.server.listen(0, '127.0.0.1', r));
    o.url = `http://127.0.0.1:${o.server.address().port}`;
  }
});

after(async () => {
  for (const o of [A, B]) await new Promise((r) => o.server.close(r));
});

function reset() {
  for (const o of [A, B]) {
    o.received.length = 0;
    o.redirects.clear();
  }
}

function verdict(r) {
  return pg.verify({ chainId: CHAIN, method: r.method, uri: r.target, passport: r.headers['x-agent-passport'], sig: r.headers['x-agent-sig'], body: r.body });
}

const signedFetch = pg.passportFetch({ agentKey: AGENT, passport: PASSPORT, chainId: CHAIN });

for (const status of [307, 308]) {
  test(`a ${status} within the origin is followed, signed for its new URI`, async () => {
    reset();
    A.redirects.set('/v1/start', [status, '/v1/landing?moved=1']);
    const response = await signedFetch(`${A.url}/v1/start?x=1`, { method: 'POST', body: BODY, headers: { 'content-type': 'application/json' } });
    assert.equal(response.status, 200);
    assert.deepEqual(A.received.map((r) => r.target), ['/v1/start?x=1', '/v1/landing?moved=1']);
    const landing = A.received[1];
    assert.equal(landing.method, 'POST');
    assert.equal(landing.body, BODY);
    assert.equal(verdict(A.received[0]).ok, true);
    assert.equal(verdict(landing).ok, true, JSON.stringify(verdict(landing)));
    assert.deepEqual(B.received, []);
  });
}

test('a 303 after a POST within the origin becomes a signed GET without a body', async () => {
  reset();
  A.redirects.set('/v1/start', [303, '/v1/result']);
  const response = await signedFetch(`${A.url}/v1/start`, { method: 'POST', body: BODY, headers: { 'content-type': 'application/json' } });
  assert.equal(response.status, 200);
  const result = A.received[1];
  assert.equal(result.method, 'GET');
  assert.equal(result.body, '');
  assert.equal(result.headers['content-type'], undefined);
  // Ed25519 signatures are deterministic: the signature of GET /v1/result, no body.
  assert.equal(result.headers['x-agent-sig'], pg.signRequest(AGENT, PASSPORT, CHAIN, 'GET', '/v1/result', ''));
});

for (const [status, method] of [[307, 'POST'], [308, 'POST'], [301, 'GET'], [302, 'GET'], [303, 'POST']]) {
  test(`a ${status} to another origin is refused and that origin receives nothing (${method})`, async () => {
    reset();
    A.redirects.set('/v1/start', [status, `${B.url}/v1/stolen`]);
    await assert.rejects(signedFetch(`${A.url}/v1/start`, method === 'POST' ? { method, body: BODY } : {}), (e) => {
      assert.ok(e instanceof pg.PassportGateError, `${e.name}: ${e.message}`);
      assert.equal(e.code, 'redirect_cross_origin');
      assert.equal(e.message, `refusing to follow the ${status} redirect from ${A.url} to ${B.url}: the passport, signature and body are only sent to the origin they were signed for`);
      return true;
    });
    assert.equal(A.received.length, 1);
    assert.deepEqual(B.received, []);
  });
}

test("redirect: 'manual' returns the redirect as it is", async () => {
  reset();
  A.redirects.set('/v1/start', [307, `${B.url}/v1/stolen`]);
  const response = await signedFetch(`${A.url}/v1/start`, { method: 'POST', body: BODY, redirect: 'manual' });
  assert.equal(response.status, 307);
  assert.equal(response.headers.get('location'), `${B.url}/v1/stolen`);
  assert.deepEqual(B.received, []);
});

test('a redirect loop within the origin stops after 20 hops', async () => {
  reset();
  A.redirects.set('/v1/loop', [307, '/v1/loop']);
  await assert.rejects(signedFetch(`${A.url}/v1/loop`, { method: 'POST', body: BODY }), { name: 'PassportGateError', code: 'too_many_redirects' });
  assert.equal(A.received.length, 21);
});

test('through the npm openai SDK: a redirect to another origin fails, one within is followed', async () => {
  const { default: OpenAI } = await import('openai');
  reset();
  A.redirects.set('/v1/chat/completions', [307, `${B.url}/v1/chat/completions`]);
  const client = new OpenAI({ baseURL: `${A.url}/v1`, apiKey: 'unused', maxRetries: 0, fetch: signedFetch });
  const messages = [{ role: 'user', content: 'hello' }];
  await assert.rejects(client.chat.completions.create({ model: 'm', messages }), (e) => {
    const refusal = e instanceof pg.PassportGateError ? e : e.cause;
    assert.ok(refusal instanceof pg.PassportGateError, `${e.name}: ${e.message}`);
    assert.equal(refusal.code, 'redirect_cross_origin');
    return true;
  });
  assert.deepEqual(B.received, []);
  A.redirects.set('/v1/chat/completions', [307, '/v2/chat/completions']);
  await client.chat.completions.create({ model: 'm', messages });
  assert.deepEqual(A.received.map((r) => r.target), ['/v1/chat/completions', '/v1/chat/completions', '/v2/chat/completions']);
  assert.equal(verdict(A.received[2]).ok, true);
  assert.deepEqual(B.received, []);
});
