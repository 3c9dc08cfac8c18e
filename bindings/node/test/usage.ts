// Compiled (not run) by test/types.test.mjs: the README's usage against index.d.ts.
import OpenAI from 'openai';
import {
  AgentKey, PrincipalKey, PassportGateError, Signer, Verdict, attachSignature, headers, inspect, mint,
  mintUnsigned, passportFetch, signRequest, verify, gonkaSign, gonkaVerify, parseEndpoint, monotonicTimestampNs,
  NativeHeaders,
} from '../index.js';

const agentKey: AgentKey = AgentKey.generate();
const principal: PrincipalKey = PrincipalKey.generate();
const passport: string = mint(principal, { agentKey, agentId: 'a', chainId: 'c', ttlSeconds: 60, models: ['m'] });
const unsigned = mintUnsigned(principal.publicKey, { agentPubkey: agentKey.publicKey, agentId: 'a', chainId: 'c', expiresAt: new Date() });
const attached: string = attachSignature(unsigned.envelope, 'sig');
const state: 'valid' | 'expired' | 'not_yet_valid' = inspect(passport).state;
const sig: string = signRequest(agentKey, passport, 'c', 'POST', '/v1', new Uint8Array(4));
const both: { 'X-Agent-Sig': string } = headers(agentKey, passport, 'c', 'GET', '/v1?x=1');
const verdict: Verdict = verify({ chainId: 'c', method: 'POST', uri: '/v1', passport, sig, body: 'x' });
if (verdict.ok) console.log(verdict.agent_id);
const signer = new Signer(agentKey, passport, 'c');
const client = new OpenAI({ baseURL: 'http://127.0.0.1:1/v1', apiKey: 'x', fetch: passportFetch({ agentKey, passport, chainId: 'c' }) });
const gonka = passportFetch({
  agentKey, passport, chainId: 'c', gonkaKey: 'gonka.json',
  endpoints: ['https://node1.example/v1;gonka1w508d6qejxtdg4y5r3zarvary0c5xw7k2gsyg6'],
});
const native: NativeHeaders = gonkaSign(principal, 'x', monotonicTimestampNs(), parseEndpoint('https://n/v1').transferAddress ?? '');
gonkaVerify({ publicKey: principal.publicKey, headers: { ...native }, body: 'x', nodeAddress: '' });
const e: Error = new PassportGateError('x');
try {
  mint(principal, { agentKey, agentId: 'a', chainId: 'c' });
} catch (err) {
  if (err instanceof PassportGateError) console.log(err.code satisfies string, err.message);
}
console.log(attached, state, both, signer.passport, client, e, gonka);
