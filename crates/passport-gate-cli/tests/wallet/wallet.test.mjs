// Drives the real wallet page (served by `passport-gate wallet`) in Debian's chromium
// with a test Keplr wallet: real ADR-036 signatures from a test key, made in Node with
// @keplr-wallet/cosmos and cosmjs, exposed to the page as `window.keplr`.
//
// Started by tests/wallet_browser.rs, which passes:
//   WALLET_URL    the page, e.g. http://127.0.0.1:8787/
//   CHAIN_ID      the chain the page serves
//   PREFIX        its bech32 prefix
//   AGENT_PUBKEY  the agent's public key (base64)
//   MODEL         the model the passport allows
//   PASSPORT_OUT  where to write the minted passport (the Rust test sends a request with it)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SCREENSHOTS   optional: a directory for the README's screenshots
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { Secp256k1Wallet } from '@cosmjs/amino';
import { makeADR36AminoSignDoc, verifyADR36Amino } from '@keplr-wallet/cosmos';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this through tests/wallet_browser.rs`);
  return v;
};
const PAGE_URL = need('WALLET_URL');
const CHAIN_ID = need('CHAIN_ID');
const PREFIX = need('PREFIX');
const AGENT_PUBKEY = need('AGENT_PUBKEY');
const MODEL = need('MODEL');
const PASSPORT_OUT = need('PASSPORT_OUT');
const SHOTS = process.env.SCREENSHOTS || '';

// The principal's test key: fixed, so the screenshots show the same address each run.
const PRINCIPAL_SECRET = Uint8Array.from({ length: 32 }, (_, i) => i + 1);

// What the test wallet does; each test sets what it needs.
const behaviour = { knowsChain: true, refuseSigning: false, suggested: null, signed: [] };
let principal;
let browser;
let page;
let pageErrors = [];
let consoleErrors = [];

async function exposeTestWallet(p) {
  await p.exposeFunction('__testWalletEnable', async (chainId) => {
    if (!behaviour.knowsChain) throw new Error(`There is no chain info for ${chainId}`);
    if (chainId !== CHAIN_ID) throw new Error(`unexpected chain ${chainId}`);
  });
  await p.exposeFunction('__testWalletSuggest', async (info) => {
    behaviour.suggested = info;
    behaviour.knowsChain = true;
  });
  await p.exposeFunction('__testWalletGetKey', async () => {
    const [account] = await principal.getAccounts();
    return { name: 'test principal', algo: 'secp256k1', pubKey: Array.from(account.pubkey), bech32Address: account.address };
  });
  // Keplr's signArbitrary: the ADR-036 amino sign doc of (signer, data), signed by the key.
  await p.exposeFunction('__testWalletSign', async (chainId, signer, data) => {
    if (behaviour.refuseSigning) throw new Error('Request rejected');
    const bytes = typeof data === 'string' ? data : Uint8Array.from(data);
    const { signature } = await principal.signAmino(signer, makeADR36AminoSignDoc(signer, bytes));
    const [account] = await principal.getAccounts();
    // An independent check that the signature is a real ADR-036 one.
    assert.ok(verifyADR36Amino(PREFIX, signer, bytes, account.pubkey, Buffer.from(signature.signature, 'base64')));
    behaviour.signed.push({ chainId, signer, data });
    return signature;
  });
  await p.addInitScript(() => {
    window.keplr = {
      enable: (chainId) => window.__testWalletEnable(chainId),
      experimentalSuggestChain: (info) => window.__testWalletSuggest(info),
      getKey: async (chainId) => {
        const k = await window.__testWalletGetKey(chainId);
        return { ...k, pubKey: new Uint8Array(k.pubKey) };
      },
      signArbitrary: (chainId, signer, data) => window.__testWalletSign(chainId, signer, data),
    };
  });
}

async function shot(name, locator) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await (locator || page).screenshot({ path: join(SHOTS, `${name}.png`) });
}

// Signs and waits for the passport or a refusal; returns the refusals shown, by field.
async function signAndWait() {
  await page.getByRole('button', { name: 'Sign with wallet' }).click();
  await page.waitForFunction(() => !document.getElementById('sign').disabled);
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll('.error')]
    .filter((e) => !e.hidden).map((e) => [e.id, e.textContent])));
}

async function fillForm({ lifetime = '30', models = MODEL } = {}) {
  await page.getByLabel('Agent public key').fill(AGENT_PUBKEY);
  await page.getByLabel('Agent id').fill('urn:aps:agent:browser-test');
  await page.getByLabel('Models, one per line').fill(models);
  await page.getByLabel('Lifetime in minutes').fill(lifetime);
}

before(async () => {
  principal = await Secp256k1Wallet.fromKey(PRINCIPAL_SECRET, PREFIX);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 820, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(PAGE_URL).origin });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // A refusal is a 4xx answer the page shows; chromium also logs it as a failed load.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) consoleErrors.push(m.text());
  });
  await exposeTestWallet(page);
  await page.goto(PAGE_URL);
  await page.waitForSelector('body[data-ready=true]');
});

after(async () => {
  await browser?.close();
});

test('the page shows the chain and the gateway maximum lifetime', async () => {
  await assert.doesNotReject(page.getByText(`Chain ${CHAIN_ID}`).waitFor());
  assert.equal(await page.locator('#max-minutes').textContent(), '60');
  await shot('wallet-start');
});

test('every control has a label', async () => {
  const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input, textarea, select')]
    .filter((el) => !(el.labels && el.labels.length))
    .map((el) => el.id));
  assert.deepEqual(unlabeled, []);
});

test('a wallet that is not installed is named next to the wallet', async () => {
  await page.getByRole('button', { name: 'Connect Leap' }).click();
  await assert.doesNotReject(page.locator('#wallet-error', { hasText: 'Leap is not installed' }).waitFor());
});

test('a wallet that does not know the chain is offered it, then connects', async () => {
  behaviour.knowsChain = false;
  await page.getByRole('button', { name: 'Connect Keplr' }).click();
  await page.locator('#wallet-error', { hasText: `There is no chain info for ${CHAIN_ID}` }).waitFor();
  await page.getByRole('button', { name: 'Add this chain to the wallet' }).click();
  await page.locator('#wallet-status', { hasText: 'Connected to Keplr' }).waitFor();
  assert.equal(behaviour.suggested.chainId, CHAIN_ID);
  assert.equal(behaviour.suggested.bech32Config.bech32PrefixAccAddr, PREFIX);
  assert.ok(await page.locator('#wallet-error').isHidden());
});

test('a scope the gateway would refuse is shown next to its field and nothing is signed', async () => {
  const before = behaviour.signed.length;
  await fillForm({ lifetime: '61' });
  await page.getByRole('button', { name: 'Sign with wallet' }).click();
  const error = page.locator('#lifetime-error');
  await error.waitFor();
  assert.match(await error.textContent(), /at most 3600 seconds \(60 minutes\), the gateway's maximum/);
  assert.equal(await page.getByLabel('Lifetime in minutes').getAttribute('aria-invalid'), 'true');
  await shot('wallet-scope-refused', page.locator('fieldset', { hasText: 'What the agent may do' }));
  await fillForm({ models: '' });
  await page.getByRole('button', { name: 'Sign with wallet' }).click();
  await page.locator('#models-error', { hasText: 'list at least one model' }).waitFor();
  assert.equal(behaviour.signed.length, before);
});

test('a wallet that refuses to sign is shown next to the wallet and nothing is minted', async () => {
  behaviour.refuseSigning = true;
  await fillForm();
  await page.getByRole('button', { name: 'Sign with wallet' }).click();
  await page.locator('#wallet-error', { hasText: 'The wallet did not sign: Request rejected' }).waitFor();
  assert.ok(await page.locator('#result').isHidden());
  behaviour.refuseSigning = false;
});

let passport;

test('signing with the wallet mints a passport the page checked', async () => {
  await fillForm();
  assert.deepEqual(await signAndWait(), {});
  await page.locator('#result').waitFor();
  const verdict = await page.locator('#result-verdict').textContent();
  assert.match(verdict, /verifies: a gateway on/);
  passport = await page.getByLabel('X-Agent-Passport value', { exact: true }).inputValue();
  const envelope = JSON.parse(Buffer.from(passport, 'base64').toString('utf8'));
  assert.equal(envelope.chain_id, CHAIN_ID);
  assert.equal(envelope.agent_pubkey.public_key, AGENT_PUBKEY);
  assert.deepEqual(envelope.scope.allowed_models, [MODEL]);
  const [account] = await principal.getAccounts();
  assert.equal(envelope.principal_address, account.address);
  // The wallet was asked to sign exactly the data the server answered, as the principal.
  const last = behaviour.signed.at(-1);
  assert.equal(last.chainId, CHAIN_ID);
  assert.equal(last.signer, account.address);
  const window = await page.locator('#result-window').textContent();
  assert.match(window, /Issued.*UTC/);
  assert.match(window, /Expires.*UTC/);
  assert.match(await page.locator('#next-command').textContent(), /^passport-gate request .* --chain-id 'gonka-mainnet'/);
  await page.getByRole('button', { name: 'Copy passport' }).click();
  await page.locator('#copy-status', { hasText: 'Passport copied.' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), passport);
  writeFileSync(PASSPORT_OUT, passport);
  await shot('wallet-minted', page.locator('#result'));
});

test('the decode tab shows a passport and says that it verifies', async () => {
  await page.getByRole('tab', { name: 'Mint a passport' }).focus();
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getByRole('tab', { name: 'Decode a passport' }).getAttribute('aria-selected'), 'true');
  await page.getByLabel('Passport to decode').fill(passport);
  await page.getByRole('button', { name: 'Decode' }).click();
  await page.locator('#decoded').waitFor();
  assert.match(await page.locator('#decoded-verdict').textContent(), /verifies/);
  assert.match(await page.locator('#decoded-facts').textContent(), /matches/);
  assert.match(await page.locator('#decoded-json').textContent(), /"agent_id": "urn:aps:agent:browser-test"/);
  await shot('wallet-decode', page.locator('#panel-decode'));
});

test('the decode tab says why a tampered passport does not verify', async () => {
  const envelope = JSON.parse(Buffer.from(passport, 'base64').toString('utf8'));
  envelope.agent_id = 'urn:aps:agent:someone-else';
  await page.getByLabel('Passport to decode').fill(Buffer.from(JSON.stringify(envelope)).toString('base64'));
  await page.getByRole('button', { name: 'Decode' }).click();
  await page.locator('#decoded-verdict', { hasText: 'Refused (principal_sig_invalid)' }).waitFor();
  await page.getByLabel('Passport to decode').fill('not a passport');
  await page.getByRole('button', { name: 'Decode' }).click();
  await page.locator('#passport-error', { hasText: 'not strict standard base64' }).waitFor();
});

test('the page works at phone width without sideways scrolling', async () => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.getByRole('tab', { name: 'Mint a passport' }).click();
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
    .map((el) => el.id || el.tagName));
  assert.deepEqual(wide, [], 'elements wider than a phone');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await shot('wallet-phone');
});

test('a passport valid only later is shown as signed and not yet valid', async () => {
  await page.setViewportSize({ width: 820, height: 900 });
  const later = new Date(Date.now() + 20 * 60 * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  const local = `${later.getFullYear()}-${pad(later.getMonth() + 1)}-${pad(later.getDate())}T${pad(later.getHours())}:${pad(later.getMinutes())}`;
  await fillForm();
  await page.getByLabel('Not valid before (optional, your local time)').fill(local);
  assert.deepEqual(await signAndWait(), {});
  assert.match(await page.locator('#result-verdict').textContent(), /signed correctly, but not valid yet/);
  assert.match(await page.locator('#result-window').textContent(), /Not before/);
  await page.getByLabel('Not valid before (optional, your local time)').fill('');
});

test('a passport can be minted with the keyboard alone', async () => {
  await page.reload();
  await page.waitForSelector('body[data-ready=true]');
  const focused = () => page.evaluate(() => document.activeElement.id);
  await page.getByRole('tab', { name: 'Mint a passport' }).focus();
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'connect-keplr');
  await page.keyboard.press('Enter');
  await page.locator('#wallet-status', { hasText: 'Connected to Keplr' }).waitFor();
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'agent_key');
  await page.keyboard.type(AGENT_PUBKEY);
  await page.keyboard.press('Tab');
  await page.keyboard.type('urn:aps:agent:keyboard');
  await page.keyboard.press('Tab');
  await page.keyboard.type(MODEL);
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'lifetime');
  await page.keyboard.press('Enter');
  await page.locator('#result').waitFor();
  assert.equal(await focused(), 'result-title');
  assert.match(await page.locator('#result-verdict').textContent(), /verifies/);
});

test('no script error or blocked load reached only the console', () => {
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(consoleErrors, []);
});
