'use strict';
// Signed agent passports (aps-agent-envelope-v1) for Node agents. Everything runs the
// passport-gate Rust library's own code (key files, JCS, ADR-036, the agent signing
// payload) through napi-rs; this file only shapes arguments and results and adds
// passportFetch for the openai SDK's `fetch` option.

const { fileURLToPath } = require('node:url');
const native = require('./passport_gate.node');

const PASSPORT_HEADER = 'X-Agent-Passport';
const SIGNATURE_HEADER = 'X-Agent-Sig';

/**
 * A key, passport, option or request that passport-gate refuses: `code` is stable
 * (snake_case, for programs), `message` one line for people, in this package's option
 * names.
 */
class PassportGateError extends Error {
  constructor(message, code = 'refused') {
    super(message);
    this.name = 'PassportGateError';
    this.code = code;
  }
}

// The native half reports `[code] message`.
const CODED = /^\[([a-z0-9_]+)\] ([^]*)$/;

function refusing(fn) {
  try {
    return fn();
  } catch (e) {
    // Ours as they are: refusals, and TypeErrors for arguments of the wrong type.
    if (e instanceof PassportGateError || !(e instanceof Error) || e.code === 'invalid_argument') throw e;
    const coded = CODED.exec(e.message);
    if (coded) throw new PassportGateError(coded[2], coded[1]);
    // napi's own argument conversion (a value of the wrong type reached the addon).
    throw new PassportGateError(e.message, 'invalid_argument');
  }
}

function typeError(message) {
  return Object.assign(new TypeError(message), { code: 'invalid_argument' });
}

function invalid(message) {
  return new PassportGateError(message, 'invalid_option');
}

function kind(value) {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(String(value)).slice(0, 40)}`;
}

function requiredString(name, value) {
  if (typeof value !== 'string') throw invalid(`${name} must be a string, not ${value === undefined ? 'missing' : kind(value)}`);
  return value;
}

function optionalString(name, value) {
  if (value === undefined || value === null) return null;
  return requiredString(name, value);
}

function optionalInteger(name, value, min) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || (min !== undefined && value < min)) {
    throw invalid(`${name} must be a whole number${min !== undefined ? ` of at least ${min}` : ''}, not ${kind(value)}`);
  }
  return value;
}

function optionalModels(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') throw invalid(`models must be an array of model names, not a string: models: [${JSON.stringify(value)}]`);
  if (!Array.isArray(value)) throw invalid(`models must be an array of model names, not ${kind(value)}`);
  value.forEach((m, i) => {
    if (typeof m !== 'string') throw invalid(`models[${i}] must be a model name (a string), not ${kind(m)}`);
  });
  return value;
}

const encoder = new TextEncoder();

function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new PassportGateError(`the body must be a string, a Uint8Array, an ArrayBuffer or a view of one, not ${kind(body)}`, 'invalid_argument');
}

function time(name, value) {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw invalid(`${name} is an invalid Date`);
    return value.toISOString().replace(/\.000Z$/, 'Z');
  }
  if (typeof value !== 'string') throw invalid(`${name} must be a Date or an RFC 3339 string, not ${kind(value)}`);
  return value;
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
  static fromKeyFile(keyText) {
    return new AgentKey(refusing(() => native.AgentKey.fromKeyFile(text('text', keyText))));
  }
  /** The key in the file at `path`. */
  static load(path) {
    return new AgentKey(refusing(() => native.AgentKey.load(filePath(path))));
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
    refusing(() => this._inner.save(filePath(path)));
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
  static fromKeyFile(keyText) {
    return new PrincipalKey(refusing(() => native.PrincipalKey.fromKeyFile(text('text', keyText))));
  }
  /** The key in the file at `path`. */
  static load(path) {
    return new PrincipalKey(refusing(() => native.PrincipalKey.load(filePath(path))));
  }
  /** The compressed public key, standard base64. */
  get publicKey() {
    return this._inner.publicKey;
  }
  /** The account address under `prefix`. */
  address(prefix = 'gonka') {
    return refusing(() => this._inner.address(text('prefix', prefix)));
  }
  /** The key file text, as `keygen --principal` writes it. */
  keyFile(prefix = 'gonka') {
    return refusing(() => this._inner.keyFile(text('prefix', prefix)));
  }
  /** Writes the key file at `path` (which must not exist), mode 0600. */
  save(path, prefix = 'gonka') {
    refusing(() => this._inner.save(filePath(path), text('prefix', prefix)));
  }
}

/** An agent key bound to one passport for one chain: signs many requests. */
class Signer {
  constructor(agentKey, passport, chainId) {
    this._inner = refusing(() => new native.Signer(agentArg(agentKey), text('passport', passport), text('chainId', chainId)));
  }
  /** The X-Agent-Passport value. */
  get passport() {
    return this._inner.passport;
  }
  /** The X-Agent-Sig value for `method`, `uri` (path and ?query as sent) and `body`. */
  sign(method, uri, body) {
    const b = bytes(body);
    return refusing(() => this._inner.sign(text('method', method), text('uri', uri), b));
  }
  /** Both headers. */
  headers(method, uri, body) {
    return { [PASSPORT_HEADER]: this.passport, [SIGNATURE_HEADER]: this.sign(method, uri, body) };
  }
}

function mintOptions(o, principalPubkey) {
  if (o === null || typeof o !== 'object') throw invalid(`the options must be an object, not ${kind(o)}`);
  if ((o.agentKey === undefined) === (o.agentPubkey === undefined)) {
    throw invalid('give agentKey or agentPubkey');
  }
  if (o.agentKey !== undefined && !(o.agentKey instanceof AgentKey)) throw invalid(`agentKey must be an AgentKey, not ${kind(o.agentKey)}`);
  return JSON.stringify({
    chain_id: requiredString('chainId', o.chainId),
    agent_id: requiredString('agentId', o.agentId),
    agent_pubkey: o.agentKey !== undefined ? o.agentKey.publicKey : requiredString('agentPubkey', o.agentPubkey),
    ttl_seconds: optionalInteger('ttlSeconds', o.ttlSeconds),
    expires_at: time('expiresAt', o.expiresAt),
    not_before: time('notBefore', o.notBefore),
    issued_at: time('issuedAt', o.issuedAt),
    models: optionalModels(o.models),
    beneficiary: optionalString('beneficiary', o.beneficiary),
    prefix: optionalString('prefix', o.prefix) ?? 'gonka',
    max_ttl_seconds: optionalInteger('maxTtlSeconds', o.maxTtlSeconds, 0) ?? 3600,
    principal_pubkey: principalPubkey === undefined ? null : requiredString('principalPubkey', principalPubkey),
  });
}

/** Mints a passport and returns the X-Agent-Passport value (`passport-gate mint`). */
function mint(principalKey, options) {
  if (!(principalKey instanceof PrincipalKey)) {
    throw typeError(`principalKey must be a PrincipalKey (PrincipalKey.generate(), .load(path) or .fromKeyFile(text)), not ${kind(principalKey)}`);
  }
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
  const json = typeof envelope === 'string' ? envelope : JSON.stringify(envelope ?? null);
  return refusing(() => native.attachSignature(json, text('signature', signature), text('prefix', prefix)));
}

/** The passport's envelope, ids, derived address and validity `state` now; signatures unchecked. */
function inspect(passport, prefix = 'gonka') {
  return JSON.parse(refusing(() => native.inspectJson(text('passport', passport), text('prefix', prefix))));
}

/** The gateway verifier's verdict on one request (`passport-gate verify`), for tests and tooling. */
function verify(o) {
  if (o === null || typeof o !== 'object') throw invalid(`the options must be an object, not ${kind(o)}`);
  const json = JSON.stringify({
    chain_id: requiredString('chainId', o.chainId),
    method: requiredString('method', o.method),
    uri: requiredString('uri', o.uri),
    passport: requiredString('passport', o.passport),
    sig: requiredString('sig', o.sig),
    now: time('now', o.now),
    max_ttl_seconds: optionalInteger('maxTtlSeconds', o.maxTtlSeconds, 0) ?? 3600,
    prefix: optionalString('prefix', o.prefix) ?? 'gonka',
  });
  const body = bytes(o.body);
  return JSON.parse(refusing(() => native.verifyJson(json, body)));
}

/** The X-Agent-Sig value for one request. */
function signRequest(agentKey, passport, chainId, method, uri, body) {
  const b = bytes(body);
  return refusing(() => native.signRequest(agentArg(agentKey), text('passport', passport), text('chainId', chainId), text('method', method), text('uri', uri), b));
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
  if (typeof value !== 'string') throw typeError(`${name} must be a string, not ${kind(value)}`);
  return value;
}

function filePath(path) {
  if (path instanceof URL) return fileURLToPath(path);
  return text('path', path);
}

function agentArg(agentKey) {
  if (!(agentKey instanceof AgentKey)) {
    throw typeError(`agentKey must be an AgentKey (AgentKey.generate(), .load(path) or .fromKeyFile(text)), not ${kind(agentKey)}`);
  }
  return agentKey._inner;
}

function timestamp(value) {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') return value;
  throw typeError(`timestampNs must be a bigint or a decimal string, not ${typeof value} (a number cannot hold nanoseconds)`);
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
    throw typeError(`gonkaKey must be a key file path, a 64-hex-digit secret or a PrincipalKey, not ${typeof key}`);
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
      throw invalid('give transferAddress or endpoints, not both');
    }
    if (!Array.isArray(endpoints)) {
      throw typeError(`endpoints must be an array of 'url;address' strings, not ${typeof endpoints}`);
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
 *
 * Redirects are followed here (`inner` is called with `redirect: 'manual'`): a redirect
 * within the origin is signed anew for its new URI (307 and 308 with the same method and
 * body); one to another origin throws PassportGateError (`redirect_cross_origin`) before
 * anything is sent there. `redirect: 'manual'` returns the redirect as it is.
 */
function passportFetch({ agentKey, passport, chainId, gonkaKey, transferAddress, endpoints, prefix = 'gonka', fetch: inner = globalThis.fetch }) {
  const signer = new Signer(agentKey, passport, chainId);
  let gonka = null;
  if (gonkaKey !== undefined && gonkaKey !== null) {
    gonka = { signer: gonkaSigner(gonkaKey, prefix), transfers: transferAddresses({ transferAddress, endpoints, prefix }) };
  } else if (transferAddress != null || endpoints != null) {
    throw invalid('transferAddress and endpoints are for native signing: give gonkaKey too');
  }
  const sign = (method, url, body, headers) => {
    headers.set(PASSPORT_HEADER, signer.passport);
    headers.set(SIGNATURE_HEADER, signer.sign(method, url.pathname + url.search, body));
    if (gonka) {
      const transfer = refusing(() => gonka.transfers.forUrl(url.href));
      for (const [name, value] of Object.entries(gonka.signer.signNow(body, transfer))) headers.set(name, value);
    }
  };
  return async function signedFetch(input, init = {}) {
    const request = new Request(input, { ...init, duplex: init.body ? 'half' : undefined });
    let body = request.body ? new Uint8Array(await request.arrayBuffer()) : null;
    let method = request.method;
    let url = new URL(request.url);
    const headers = new Headers(request.headers);
    const signal = init.signal ?? request.signal;
    // Redirects are followed here, not by `inner`: each hop is signed for its own URI,
    // and none leaves the origin the request was signed for.
    const mode = request.redirect;
    for (let hops = 0; ; hops += 1) {
      const hop = new Headers(headers);
      sign(method, url, body ?? new Uint8Array(0), hop);
      // A fresh copy each hop: fetch may transfer (detach) the buffer it sends.
      const response = await inner(url.href, { method, headers: hop, body: body === null ? undefined : body.slice(), signal, redirect: 'manual' });
      const location = response.headers.get('location');
      if (mode === 'manual' || !REDIRECTS.has(response.status) || location === null) return response;
      await response.body?.cancel();
      if (mode === 'error') {
        throw new PassportGateError(`${request.url} answered ${response.status} (a redirect) and the request says redirect: 'error'`, 'redirect_refused');
      }
      let next;
      try {
        next = new URL(location, url);
      } catch {
        throw new PassportGateError(`${url.href} answered ${response.status} with a Location that is not a URL: ${JSON.stringify(location)}`, 'redirect_location_invalid');
      }
      if (next.origin !== url.origin) {
        throw new PassportGateError(
          `refusing to follow the ${response.status} redirect from ${url.origin} to ${next.origin}: the passport, signature and body are only sent to the origin they were signed for`,
          'redirect_cross_origin',
        );
      }
      if (hops + 1 > MAX_REDIRECTS) {
        throw new PassportGateError(`more than ${MAX_REDIRECTS} redirects from ${request.url}`, 'too_many_redirects');
      }
      // As fetch does: 303 (and 301/302 after a POST) become a GET without a body.
      if ((response.status === 303 && method !== 'GET' && method !== 'HEAD') || ((response.status === 301 || response.status === 302) && method === 'POST')) {
        method = 'GET';
        body = null;
        for (const name of ['content-type', 'content-encoding', 'content-language', 'content-location', 'content-length']) headers.delete(name);
      }
      url = next;
    }
  };
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 20;

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
