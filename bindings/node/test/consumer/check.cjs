// Run from a project that installed passport-gate (scripts/check-consumer.sh): the
// package loads with require() and works.
const assert = require('node:assert/strict');
const pg = require('passport-gate');

const agentKey = pg.AgentKey.generate();
const passport = pg.mint(pg.PrincipalKey.generate(), { agentKey, agentId: 'urn:aps:agent:cjs', chainId: 'gonka-test', ttlSeconds: 60, models: ['m'] });
const body = '{"model":"m","messages":[]}';
const sig = pg.signRequest(agentKey, passport, 'gonka-test', 'POST', '/v1/chat/completions', body);
assert.equal(pg.verify({ chainId: 'gonka-test', method: 'POST', uri: '/v1/chat/completions', passport, sig, body }).ok, true);
assert.throws(() => pg.mint(pg.PrincipalKey.generate(), { agentKey, agentId: 'a', chainId: 'c', ttlSeconds: 60, models: 'm' }), { name: 'PassportGateError', code: 'invalid_option' });
assert.equal(typeof pg.passportFetch({ agentKey, passport, chainId: 'gonka-test' }), 'function');
console.log(`CommonJS: require('passport-gate') from ${require.resolve('passport-gate')} works`);
