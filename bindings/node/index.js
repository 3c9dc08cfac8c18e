'use strict';
// Signed agent passports (aps-agent-envelope-v1) for Node agents. Everything runs the
// passport-gate Rust library's own code (key files, JCS, ADR-036, the agent signing
// payload) through napi-rs; this file only shapes arguments and results and adds
// passportFetch for the openai SDK's `fetch` option.

const { fileURLToPath } = require('node:url');
const native = require('./passport_gate.node');

const PASSPORT_HEADER = 'X-Agent-Passport';
const SIGNATURE_HEADER = 'X-Agent-Sig';

/** A key, passport or request that passport-gate refuses; the message is the CLI's. */
class PassportGateError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PassportGateError';
  }
}

function refusing(fn) {
  try {
    return fn();
  } catch (e) {
    throw e instanceof Error && !(e instanceof PassportGateError) ? new PassportGateError(e.message) : e;
  }
}

const encoder = new TextEncoder();

function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new PassportGateError('the body must be a string, a Uint8Array, an ArrayBuffer or a view of one');
}

function time(value) {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) return value.toISOString().replace(/\.000Z$/, 'Z');
  return String(value);
}

class AgentKey {
  constructor(inner) {
    this._inner = inner;
  }
  /** A new random Ed25519 key. */
  static generate() {
    return new AgentKey(refusing(() => native.AgentKey.generate()));
  }
  /** The key in the text of a key file (`passport-gate keygen --agent`) or a bare 64-hex-digit secret. */
  static fromKeyFile(text) {
    return new AgentKey(refusing(() => native.AgentKey.fromKeyFile(text)));
  }
  /** The key in the file at `path`. */
  static load(path) {
    return new AgentKey(refusing(() => native.AgentKey.load(String(path))));
  }
  /** The public key, standard base64 (the passport's agent_pubkey). */
  get publicKey() {
    return this._inner.publicKey;
  }
  /** The key file text, as `keygen --agent` writes it. */
  keyFile() {
    return refusing(() => this._inner.keyFile());
  }
  /** Writes the key file at `path` (which must not exist), mode 0600. */
  save(path) {
    refusing(() => this._inner.save(String(path)));
  }
}

class PrincipalKey {
  constructor(inner) {
    this._inner = inner;
  }
  /** A new random secp256k1 key. */
  static generate() {
    return new PrincipalKey(refusing(() => native.PrincipalKey.generate()));
  }
  /** The key in the text of a key file (`keygen --principal`) or a bare 64-hex-digit secret. */
  static fromKeyFile(text) {
    return new PrincipalKey(refusing(() => native.PrincipalKey.fromKeyFile(text)));
  }
  /** The key in the file at `path`. */
  static load(path) {
    return new PrincipalKey(refusing(() => native.PrincipalKey.load(String(path))));
  }
  /** The compressed public key, standard base64. */
  get publicKey() {
    return this._inner.publicKey;
  }
  /** The account address under `prefix`. */
  address(prefix = 'gonka') {
    return refusing(() => this._inner.address(prefix));
  }
  /** The key file text, as `keygen --principal` writes it. */
  keyFile(prefix = 'gonka') {
    return refusing(() => this._inner.keyFile(prefix));
  }
  /** Writes the key file at `path` (which must not exist), mode 0600. */
  save(path, prefix = 'gonka') {
    refusing(() => this._inner.save(String(path), prefix));
  }
}

/** An agent key bound to one passport for one chain: signs many requests. */
class Signer {
  constructor(agentKey, passport, chainId) {
    this._inner = refusing(() => new native.Signer(agentKey._inner, passport, chainId));
  }
  /** The X-Agent-Passport value. */
  get passport() {
    return this._inner.passport;
  }
  /** The X-Agent-Sig value for `method`, `uri` (path and ?query as sent) and `body`. */
  sign(method, uri, body) {
    const b = bytes(body);
    return refusing(() => this._inner.sign(method, uri, b));
  }
  /** Both headers. */
  headers(method, uri, body) {
    return { [PASSPORT_HEADER]: this.passport, [SIGNATURE_HEADER]: this.sign(method, uri, body) };
  }
}

function mintOptions(o, principalPubkey) {
  if ((o.agentKey === undefined) === (o.agentPubkey === undefined)) {
    throw new PassportGateError('give agentKey or agentPubkey');
  }
  return JSON.stringify({
    chain_id: o.chainId,
    agent_id: o.agentId,
    agent_pubkey: o.agentKey !== undefined ? o.agentKey.publicKey : o.agentPubkey,
    ttl_seconds: o.ttlSeconds ?? null,
    expires_at: time(o.expiresAt),
    not_before: time(o.notBefore),
    issued_at: time(o.issuedAt),
    models: o.models ?? null,
    beneficiary: o.beneficiary ?? null,
    prefix: o.prefix ?? 'gonka',
    max_ttl_seconds: o.maxTtlSeconds ?? 3600,
    principal_pubkey: principalPubkey ?? null,
  });
}

/** Mints a passport and returns the X-Agent-Passport value (`passport-gate mint`). */
function mint(principalKey, options) {
  const json = mintOptions(options);
  return refusing(() => native.mintJson(principalKey._inner, json));
}

/** The wallet flow's first half (`mint --unsigned`): `{ envelope, sign_arbitrary: { signer, data } }`. */
function mintUnsigned(principalPubkey, options) {
  const json = mintOptions(options, principalPubkey);
  return JSON.parse(refusing(() => native.mintUnsignedJson(json)));
}

/** Completes the unsigned envelope with the wallet's base64 ADR-036 signature (`mint --attach-sig`). */
function attachSignature(envelope, signature, prefix = 'gonka') {
  const json = typeof envelope === 'string' ? envelope : JSON.stringify(envelope);
  return refusing(() => native.attachSignature(json, signature, prefix));
}

/** The passport's envelope, ids, derived address and validity `state` now; signatures unchecked. */
function inspect(passport, prefix = 'gonka') {
  return JSON.parse(refusing(() => native.inspectJson(passport, prefix)));
}

/** The gateway verifier's verdict on one request (`passport-gate verify`), for tests and tooling. */
function verify(o) {
  const json = JSON.stringify({
    chain_id: o.chainId,
    method: o.method,
    uri: o.uri,
    passport: o.passport,
    sig: o.sig,
    now: time(o.now),
    max_ttl_seconds: o.maxTtlSeconds ?? 3600,
    prefix: o.prefix ?? 'gonka',
  });
  const body = bytes(o.body);
  return JSON.parse(refusing(() => native.verifyJson(json, body)));
}

/** The X-Agent-Sig value for one request. */
function signRequest(agentKey, passport, chainId, method, uri, body) {
  const b = bytes(body);
  return refusing(() => native.signRequest(agentKey._inner, passport, chainId, method, uri, b));
}

/** Both headers for one request. */
function headers(agentKey, passport, chainId, method, uri, body) {
  return new Signer(agentKey, passport, chainId).headers(method, uri, body);
}

/** A developer's Gonka key, signing requests natively as a Gonka API node expects. */
class GonkaSigner {
  constructor(inner) {
    this._inner = inner;
  }
  /** The X-Requester-Address value. */
  get address() {
    return this._inner.address;
  }
  /**
   * The native headers, in the order sent, for `body`, `timestampNs` (a bigint or its
   * decimal string) and `transferAddress` (empty: none; signed as given).
   */
  sign(body, timestampNs, transferAddress = '') {
    const b = bytes(body);
    const ts = timestamp(timestampNs);
    const t = text('transferAddress', transferAddress);
    return Object.fromEntries(refusing(() => this._inner.sign(b, ts, t)));
  }
  /** `sign` at the process's monotonic nanosecond clock. */
  signNow(body, transferAddress = '') {
    const b = bytes(body);
    const t = text('transferAddress', transferAddress);
    return Object.fromEntries(refusing(() => this._inner.signNow(b, t)));
  }
}

function text(name, value) {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, not ${typeof value}`);
  return value;
}

function timestamp(value) {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') return value;
  throw new TypeError(`timestampNs must be a bigint or a decimal string, not ${typeof value} (a number cannot hold nanoseconds)`);
}

/**
 * A signer for `key`: the path of a principal key file (`passport-gate keygen
 * --principal`), a 64-hex-digit secret (`0x` allowed), a PrincipalKey, or a GonkaSigner.
 */
function gonkaSigner(key, prefix = 'gonka') {
  text('prefix', prefix);
  if (key instanceof GonkaSigner) return key;
  if (key instanceof PrincipalKey) return new GonkaSigner(refusing(() => native.GonkaSigner.fromPrincipalKey(key._inner, prefix)));
  if (key instanceof URL) key = fileURLToPath(key);
  if (typeof key !== 'string') {
    throw new TypeError(`gonkaKey must be a key file path, a 64-hex-digit secret or a PrincipalKey, not ${typeof key}`);
  }
  return new GonkaSigner(refusing(() => native.GonkaSigner.fromKey(key, prefix)));
}

/** The X-Requester-Address of `key` (see gonkaSigner). */
function gonkaAddress(key, prefix = 'gonka') {
  return gonkaSigner(key, prefix).address;
}

/** The native headers for one request (see GonkaSigner.sign). */
function gonkaSign(key, body, timestampNs, transferAddress = '', prefix = 'gonka') {
  return gonkaSigner(key, prefix).sign(body, timestampNs, transferAddress);
}

/**
 * Checks native headers as a Gonka API node does (signature, requester address, timestamp
 * after 1970; no window or replay); throws PassportGateError naming the reason.
 */
function gonkaVerify({ publicKey, headers, body, nodeAddress, prefix = 'gonka' }) {
  const pairs = headers instanceof Headers ? [...headers] : Object.entries(headers);
  const b = bytes(body);
  refusing(() => native.gonkaVerify(text('publicKey', publicKey), pairs, b, text('nodeAddress', nodeAddress), prefix));
}

/** `{ url, transferAddress }` of a gonka-openai `url;address` entry (no `;`: no address). */
function parseEndpoint(entry, prefix = 'gonka') {
  const e = refusing(() => native.parseEndpoint(text('entry', entry), prefix));
  return { url: e.url, transferAddress: e.transferAddress ?? null };
}

/**
 * Where each request's transfer address comes from: one checked `transferAddress`, or the
 * `endpoints` entry (`url;address`) serving the request URL. Not both.
 */
function transferAddresses({ transferAddress, endpoints, prefix = 'gonka' } = {}) {
  if (endpoints !== undefined && endpoints !== null) {
    if (transferAddress !== undefined && transferAddress !== null) {
      throw new PassportGateError('give transferAddress or endpoints, not both');
    }
    if (!Array.isArray(endpoints)) {
      throw new TypeError(`endpoints must be an array of 'url;address' strings, not ${typeof endpoints}`);
    }
    endpoints.forEach((e) => text('each endpoint', e));
    return refusing(() => native.TransferAddresses.endpoints(endpoints, prefix));
  }
  const one = transferAddress === undefined || transferAddress === null ? null : text('transferAddress', transferAddress);
  return refusing(() => native.TransferAddresses.one(one, prefix));
}

/** Nanoseconds since the epoch, strictly increasing within this process. */
function monotonicTimestampNs() {
  return BigInt(native.monotonicTimestampNs());
}

/**
 * A `fetch` that signs each request's final method, path and query, and body bytes, for
 * the openai SDK's `fetch` option. Bodies (strings, Uint8Array, Blob, streams) are read
 * once and sent as the signed bytes. SDK retries re-send the same bytes, hence the same
 * signature: one request to the gateway. To send the same prompt twice on purpose, give
 * each call its own nonce: `{ query: { aps_nonce: crypto.randomUUID() } }`.
 *
 * With `gonkaKey` (calling a Gonka API node directly), each request also carries the
 * native headers (`Authorization`, replacing the SDK's Bearer, `X-Requester-Address`,
 * `X-Timestamp`, `X-Transfer-Address`) signed over the same bytes, for `transferAddress`
 * or for the `endpoints` entry (`url;address`) serving the request URL.
 */
function passportFetch({ agentKey, passport, chainId, gonkaKey, transferAddress, endpoints, prefix = 'gonka', fetch: inner = globalThis.fetch }) {
  const signer = new Signer(agentKey, passport, chainId);
  let gonka = null;
  if (gonkaKey !== undefined && gonkaKey !== null) {
    gonka = { signer: gonkaSigner(gonkaKey, prefix), transfers: transferAddresses({ transferAddress, endpoints, prefix }) };
  } else if (transferAddress != null || endpoints != null) {
    throw new PassportGateError('transferAddress and endpoints are for native signing: give gonkaKey too');
  }
  return async function signedFetch(input, init = {}) {
    const request = new Request(input, { ...init, duplex: init.body ? 'half' : undefined });
    const body = request.body ? new Uint8Array(await request.arrayBuffer()) : new Uint8Array(0);
    const url = new URL(request.url);
    const hdrs = new Headers(request.headers);
    hdrs.set(PASSPORT_HEADER, signer.passport);
    hdrs.set(SIGNATURE_HEADER, signer.sign(request.method, url.pathname + url.search, body));
    if (gonka) {
      const transfer = refusing(() => gonka.transfers.forUrl(request.url));
      for (const [name, value] of Object.entries(gonka.signer.signNow(body, transfer))) hdrs.set(name, value);
    }
    return inner(request.url, {
      method: request.method,
      headers: hdrs,
      body: request.body ? body : undefined,
      signal: init.signal ?? request.signal,
      redirect: request.redirect,
    });
  };
}

module.exports = {
  AgentKey,
  PrincipalKey,
  Signer,
  PassportGateError,
  PASSPORT_HEADER,
  SIGNATURE_HEADER,
  mint,
  mintUnsigned,
  attachSignature,
  inspect,
  verify,
  signRequest,
  headers,
  passportFetch,
  GonkaSigner,
  gonkaSigner,
  gonkaAddress,
  gonkaSign,
  gonkaVerify,
  parseEndpoint,
  transferAddresses,
  monotonicTimestampNs,
};
