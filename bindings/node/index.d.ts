// Types of the `passport-gate` package (hand-written next to index.js; the native module's
// functions are wrapped there).

/** A key, passport or request that passport-gate refuses; the message is the CLI's. */
/**
 * A key, passport, option or request that passport-gate refuses. `code` is stable and
 * snake_case (for example `no_expiry`, `invalid_option`, `agent_key_mismatch`,
 * `redirect_cross_origin`); `message` is one line for people.
 */
export class PassportGateError extends Error {
  readonly name: 'PassportGateError';
  readonly code: string;
}

export const PASSPORT_HEADER: 'X-Agent-Passport';
export const SIGNATURE_HEADER: 'X-Agent-Sig';

export type Body = string | Uint8Array | ArrayBuffer | ArrayBufferView;
/** RFC 3339 text or a Date. */
export type Time = string | Date;

/** An agent's Ed25519 secret key. */
export class AgentKey {
  private constructor();
  static generate(): AgentKey;
  /** The text of a key file (`passport-gate keygen --agent`) or a bare 64-hex-digit secret. */
  static fromKeyFile(text: string): AgentKey;
  static load(path: string): AgentKey;
  /** Standard base64: the passport's agent_pubkey. */
  readonly publicKey: string;
  keyFile(): string;
  /** Writes the key file at `path` (which must not exist), mode 0600. */
  save(path: string): void;
}

/** A principal's secp256k1 secret key. */
export class PrincipalKey {
  private constructor();
  static generate(): PrincipalKey;
  static fromKeyFile(text: string): PrincipalKey;
  static load(path: string): PrincipalKey;
  /** The compressed public key, standard base64. */
  readonly publicKey: string;
  address(prefix?: string): string;
  keyFile(prefix?: string): string;
  save(path: string, prefix?: string): void;
}

/** An agent key bound to one passport for one chain: signs many requests. */
export class Signer {
  /** Throws PassportGateError when the passport does not parse or names another agent key. */
  constructor(agentKey: AgentKey, passport: string, chainId: string);
  readonly passport: string;
  /** The X-Agent-Sig value; `uri` is the path and ?query exactly as sent. */
  sign(method: string, uri: string, body?: Body): string;
  headers(method: string, uri: string, body?: Body): { 'X-Agent-Passport': string; 'X-Agent-Sig': string };
}

export interface MintOptions {
  agentId: string;
  chainId: string;
  /** The agent's key, or `agentPubkey` (base64) instead. */
  agentKey?: AgentKey;
  agentPubkey?: string;
  /** Lifetime from issue (exclusive with `expiresAt`). */
  ttlSeconds?: number;
  expiresAt?: Time;
  notBefore?: Time;
  /** Default: now, whole seconds. */
  issuedAt?: Time;
  /** Absent: every model; `[]`: none. */
  models?: string[];
  beneficiary?: string;
  /** Bech32 prefix, default "gonka". */
  prefix?: string;
  /** The largest lifetime the target gateway accepts, default 3600. */
  maxTtlSeconds?: number;
}

export interface UnsignedPassport {
  envelope: Record<string, unknown>;
  sign_arbitrary: { signer: string; data: string };
}

export interface Inspection {
  envelope: Record<string, unknown>;
  envelope_sha256: string;
  passport_id: string;
  derived_address: string | null;
  address_matches: boolean;
  issued_at: string;
  not_before: string | null;
  expires_at: string;
  state: 'valid' | 'expired' | 'not_yet_valid';
}

export type Verdict =
  | {
      ok: true;
      agent_id: string;
      agent_pubkey: string;
      principal_address: string;
      model: string | null;
      beneficiary: string | null;
      allowed_models: string[] | null;
      expires_at: string;
      envelope_sha256: string;
      passport_id: string;
      request_body_sha256: string;
    }
  | { ok: false; status: number; code: string; message: string }
  | { ok: false; passthrough: true; message: string };

export interface VerifyOptions {
  chainId: string;
  method: string;
  uri: string;
  passport: string;
  sig: string;
  body?: Body;
  /** Verify as of this instant instead of now. */
  now?: Time;
  maxTtlSeconds?: number;
  prefix?: string;
}

/** Mints a passport: the X-Agent-Passport value (`passport-gate mint`). */
export function mint(principalKey: PrincipalKey, options: MintOptions): string;
/** The wallet flow's first half (`mint --unsigned`). */
export function mintUnsigned(principalPubkey: string, options: MintOptions): UnsignedPassport;
/** Completes the unsigned envelope with a wallet's base64 ADR-036 signature (`mint --attach-sig`). */
export function attachSignature(envelope: Record<string, unknown> | string, signature: string, prefix?: string): string;
/** The envelope, ids, derived address and validity state now; signatures unchecked. */
export function inspect(passport: string, prefix?: string): Inspection;
/** The gateway verifier's verdict on one request (no replay or revocation state). */
export function verify(options: VerifyOptions): Verdict;
export function signRequest(agentKey: AgentKey, passport: string, chainId: string, method: string, uri: string, body?: Body): string;
export function headers(
  agentKey: AgentKey,
  passport: string,
  chainId: string,
  method: string,
  uri: string,
  body?: Body,
): { 'X-Agent-Passport': string; 'X-Agent-Sig': string };

/**
 * A developer's Gonka key: the path of a principal key file (`passport-gate keygen
 * --principal`), a 64-hex-digit secret (`0x` allowed), a PrincipalKey, or a GonkaSigner.
 */
export type GonkaKey = string | URL | PrincipalKey | GonkaSigner;
/** Nanoseconds since the epoch: a bigint or its decimal string, never a number. */
export type TimestampNs = bigint | string;

/** The native headers, in the order sent; X-Transfer-Address only when not empty. */
export interface NativeHeaders {
  Authorization: string;
  'X-Requester-Address': string;
  'X-Timestamp': string;
  'X-Transfer-Address'?: string;
}

/** Signs requests natively, as a Gonka API node expects. */
export class GonkaSigner {
  private constructor();
  /** The X-Requester-Address value. */
  readonly address: string;
  /** The transfer address (empty: none) is signed as given. */
  sign(body: Body, timestampNs: TimestampNs, transferAddress?: string): NativeHeaders;
  /** `sign` at the process's monotonic nanosecond clock. */
  signNow(body: Body, transferAddress?: string): NativeHeaders;
}

/** Where each request's transfer address comes from (see transferAddresses). */
export interface TransferAddresses {
  /** The transfer address for a request to `url` (empty: none). */
  forUrl(url: string): string;
}

export interface TransferOptions {
  /** One transfer address for every request (checked under `prefix`). */
  transferAddress?: string;
  /** gonka-openai's `url;address` entries: each request is signed for the one serving its URL. */
  endpoints?: string[];
  /** Bech32 prefix, default "gonka". */
  prefix?: string;
}

export function gonkaSigner(key: GonkaKey, prefix?: string): GonkaSigner;
export function gonkaAddress(key: GonkaKey, prefix?: string): string;
export function gonkaSign(key: GonkaKey, body: Body, timestampNs: TimestampNs, transferAddress?: string, prefix?: string): NativeHeaders;
/** Throws PassportGateError naming the reason (e.g. `requester_sig_invalid: ...`). */
export function gonkaVerify(options: {
  /** PrincipalKey.publicKey: compressed, base64. */
  publicKey: string;
  headers: Record<string, string> | Headers;
  body?: Body;
  /** What the node signs with when X-Transfer-Address is absent. */
  nodeAddress: string;
  prefix?: string;
}): void;
/** `url;address` (no `;`: no transfer address). */
export function parseEndpoint(entry: string, prefix?: string): { url: string; transferAddress: string | null };
export function transferAddresses(options?: TransferOptions): TransferAddresses;
/** Nanoseconds since the epoch, strictly increasing within this process. */
export function monotonicTimestampNs(): bigint;

export interface PassportFetchOptions extends TransferOptions {
  agentKey: AgentKey;
  passport: string;
  chainId: string;
  /** Also sign natively for a Gonka API node, over the same body (with transferAddress or endpoints). */
  gonkaKey?: GonkaKey;
  /** The fetch to wrap; default globalThis.fetch. */
  fetch?: typeof fetch;
}

/**
 * A fetch that signs every request (for the openai SDK's `fetch` option). Redirects
 * within the origin are signed anew for their new URI; one to another origin throws
 * PassportGateError with code `redirect_cross_origin`, and nothing is sent there.
 */
export function passportFetch(options: PassportFetchOptions): typeof fetch;
