// Run from a project that installed passport-gate (scripts/check-consumer.sh): the
// package loads with import (named and default) and works.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import pg, { AgentKey, PrincipalKey, PassportGateError, mint, signRequest, verify } from 'passport-gate';

assert.equal(pg.mint, mint);
const agentKey = AgentKey.generate();
const passport = mint(PrincipalKey.generate(), { agentKey, agentId: 'urn:aps:agent:esm', chainId: 'gonka-test', ttlSeconds: 60, models: ['m'] });
const body = new TextEncoder().encode('{"model":"m","messages":[]}');
const sig = signRequest(agentKey, passport, 'gonka-test', 'POST', '/v1/chat/completions', body);
assert.equal(verify({ chainId: 'gonka-test', method: 'POST', uri: '/v1/chat/completions', passport, sig, body }).ok, true);
assert.throws(() => mint(PrincipalKey.generate(), { agentKey, agentId: 'a', chainId: 'c' }), (e) => e instanceof PassportGateError && e.code === 'no_expiry');
console.log(`ES modules: import from 'passport-gate' (${createRequire(import.meta.url).resolve('passport-gate')}) works`);
