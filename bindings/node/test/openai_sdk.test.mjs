// The npm `openai` SDK, streaming and not, through the real `passport-gate serve` (replay
// protection on) in front of mockllm, signed by passportFetch.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import OpenAI from 'openai';
import { ALLOWED_MODEL, CHAIN, startFaultProxy, startGateway, startMockllm, stop } from './servers.mjs';

const pg = createRequire(import.meta.url)('../index.js');
const agentKey = pg.AgentKey.generate();
const passport = pg.mint(pg.PrincipalKey.generate(), {
  agentKey,
  agentId: 'urn:aps:agent:node-test',
  chainId: CHAIN,
  ttlSeconds: 600,
  models: [ALLOWED_MODEL],
});
let mockllm;
let gateway;

before(async () => {
  mockllm = await startMockllm();
  gateway = await startGateway(mockllm.url);
});

after(async () => {
  await stop(gateway?.child);
  await stop(mockllm?.child);
});

function client(baseURL, maxRetries = 2) {
  return new OpenAI({ baseURL, apiKey: 'unused', maxRetries, fetch: pg.passportFetch({ agentKey, passport, chainId: CHAIN }) });
}

// A distinct body for each call: identical body, URI and passport are one request to a
// gateway with replay protection.
function hello() {
  return { model: ALLOWED_MODEL, messages: [{ role: 'user', content: 'hello' }], user: randomUUID() };
}

test('a request is accepted', async () => {
  const answer = await client(gateway.baseURL).chat.completions.create(hello());
  assert.equal(answer.choices[0].message.content, 'hi from mockllm');
});

test('a stream is accepted', async () => {
  const stream = await client(gateway.baseURL).chat.completions.create({ ...hello(), stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(text, 'hi from mockllm');
});

test('passportFetch signs string, Uint8Array and stream bodies and the query', async () => {
  const f = pg.passportFetch({ agentKey, passport, chainId: CHAIN });
  const url = `${gateway.baseURL}/chat/completions?trace=a%20b`;
  const headers = { 'content-type': 'application/json' };
  const bodies = [
    JSON.stringify(hello()),
    new TextEncoder().encode(JSON.stringify(hello())),
    new Blob([JSON.stringify(hello())]).stream(),
  ];
  for (const body of bodies) {
    const r = await f(url, { method: 'POST', headers, body, duplex: 'half' });
    assert.equal(r.status, 200, await r.text());
  }
});

test('a model outside the scope is an SDK error with our code', async () => {
  await assert.rejects(client(gateway.baseURL, 0).chat.completions.create({ ...hello(), model: 'another-model' }), (e) => {
    assert.ok(e instanceof OpenAI.PermissionDeniedError);
    assert.equal(e.status, 403);
    assert.equal(e.code, 'model_not_allowed');
    return true;
  });
});

test('the same prompt twice needs a nonce per call', async () => {
  const c = client(gateway.baseURL, 0);
  const body = hello();
  await c.chat.completions.create(body);
  await assert.rejects(c.chat.completions.create(body), (e) => {
    assert.equal(e.status, 401);
    assert.equal(e.code, 'request_replayed');
    return true;
  });
  for (let i = 0; i < 2; i++) await c.chat.completions.create(body, { query: { aps_nonce: randomUUID() } });
});

test('a retry after an upstream 503 is not refused as a replay', async () => {
  const proxy = await startFaultProxy(mockllm.url, 503, 1);
  const flaky = await startGateway(proxy.url);
  try {
    const answer = await client(flaky.baseURL, 2).chat.completions.create(hello(), { query: { aps_nonce: randomUUID() } });
    assert.equal(answer.choices[0].message.content, 'hi from mockllm');
    assert.equal(proxy.seen.length, 2, 'the SDK retried once');
    assert.equal(proxy.seen[0]['x-agent-sig'], proxy.seen[1]['x-agent-sig'], "the retry kept the call's nonce");
  } finally {
    await stop(flaky.child);
    proxy.server.close();
  }
});
