// Signing a 4 KiB request: the binding next to the node:crypto version an agent builder
// would otherwise write (Ed25519, the spec's section 5 payload, JSON.stringify with sorted
// keys for JCS), in the same run. Prints microseconds per signature; checks both sign
// alike.   node bench/sign.mjs [iterations]
import { createPrivateKey, sign as cryptoSign } from 'node:crypto';
import { createRequire } from 'node:module';

const pg = createRequire(import.meta.url)('../index.js');
const CHAIN = 'gonka-mainnet';
const METHOD = 'POST';
const URI = '/v1/chat/completions';
const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
const BODY = new TextEncoder().encode(Array.from({ length: 4096 }, (_, i) => alphabet[i % 36]).join(''));
const DOMAIN = Buffer.from('APS-AGENT-SIG-V1\n');

function field(b) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return [len, b];
}

function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

class PureSigner {
  constructor(secret, passport, chainId) {
    // PKCS#8 wrapping of a raw Ed25519 seed.
    const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), secret]);
    this.key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    this.chain = Buffer.from(chainId);
    this.jcs = Buffer.from(canonical(JSON.parse(Buffer.from(passport, 'base64').toString('utf8'))));
  }
  sign(method, uri, body) {
    const payload = Buffer.concat([
      DOMAIN,
      ...field(this.chain),
      ...field(Buffer.from(method)),
      ...field(Buffer.from(uri)),
      ...field(this.jcs),
      ...field(body),
    ]);
    return cryptoSign(null, payload, this.key).toString('base64');
  }
}

function perOpUs(fn, n) {
  for (let i = 0; i < Math.min(n, 200); i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - start) / 1000 / n;
}

const n = Number(process.argv[2] ?? 20000);
const secret = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const agentKey = pg.AgentKey.fromKeyFile(secret.toString('hex'));
const passport = pg.mint(pg.PrincipalKey.generate(), { agentKey, agentId: 'urn:aps:agent:bench', chainId: CHAIN, ttlSeconds: 600, models: ['m1'] });
const signer = new pg.Signer(agentKey, passport, CHAIN);
const pure = new PureSigner(secret, passport, CHAIN);
if (signer.sign(METHOD, URI, BODY) !== pure.sign(METHOD, URI, BODY)) throw new Error('both must sign alike');

const rows = [
  ['binding   Signer.sign (passport parsed once)', perOpUs(() => signer.sign(METHOD, URI, BODY), n)],
  ['pure      node:crypto Ed25519 (JCS once)', perOpUs(() => pure.sign(METHOD, URI, BODY), n)],
  ['binding   signRequest (parses the passport each call)', perOpUs(() => pg.signRequest(agentKey, passport, CHAIN, METHOD, URI, BODY), n)],
  ['pure      same, parsing and JCS each call', perOpUs(() => new PureSigner(secret, passport, CHAIN).sign(METHOD, URI, BODY), n)],
];
console.log(`node ${process.version}, 4 KiB body, ${n} signatures each`);
for (const [name, us] of rows) console.log(`  ${name.padEnd(58)} ${us.toFixed(1).padStart(8)} us/op  ${Math.round(1e6 / us).toString().padStart(9)} op/s`);
