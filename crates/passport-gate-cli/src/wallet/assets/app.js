// The wallet page. It talks to the wallet (enable, getKey, signArbitrary) and to the
// page's own API; it never builds, orders or canonicalizes an envelope: the server
// answers the envelope and the exact `data` to sign, and checks the signature.
'use strict';

const FIELDS = ['wallet', 'agent_key', 'agent_id', 'models', 'lifetime', 'not_before', 'beneficiary', 'form', 'passport'];
const WALLETS = { keplr: 'Keplr', leap: 'Leap' };
let settings = null;
let wallet = null;
let walletKey = null;
let pendingWallet = null;

const $ = (id) => document.getElementById(id);

function messageOf(e) {
  if (e && typeof e.message === 'string' && e.message) return e.message;
  return String(e);
}

function showError(field, message) {
  const name = FIELDS.includes(field) ? field : 'form';
  const box = $(name + '-error');
  box.textContent = message;
  box.hidden = false;
  const control = $(name === 'models' ? 'models' : name);
  if (control && control.tagName !== 'FIELDSET' && name !== 'wallet' && name !== 'form') {
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }
}

function clearErrors() {
  for (const f of FIELDS) {
    const box = $(f + '-error');
    box.hidden = true;
    box.textContent = '';
    const control = $(f);
    if (control) control.removeAttribute('aria-invalid');
  }
}

// An API refusal carries the field it belongs to; anything else is shown on the form.
async function api(path, body) {
  const init = body === undefined ? {} : {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  };
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw { field: 'form', message: 'the page\'s server does not answer (is `passport-gate wallet` still running?)' };
  }
  let json;
  try {
    json = await resp.json();
  } catch (e) {
    throw { field: 'form', message: `the server answered ${resp.status} without JSON` };
  }
  if (!resp.ok) throw { field: json.field || 'form', message: json.detail || `refused (${resp.status})`, code: json.code };
  return json;
}

function bytesToBase64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function localTime(iso) {
  const d = new Date(iso);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
  return `${d.toLocaleString()} (${zone})`;
}

function fillWindow(dl, window) {
  dl.replaceChildren();
  const rows = [['Issued', window.issued_at]];
  if (window.not_before) rows.push(['Not before', window.not_before]);
  rows.push(['Expires', window.expires_at]);
  for (const [name, iso] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = `${iso} · your time: ${localTime(iso)}`;
    dl.append(dt, dd);
  }
  const dt = document.createElement('dt');
  dt.textContent = 'Now';
  const dd = document.createElement('dd');
  dd.textContent = window.state;
  dl.append(dt, dd);
}

function showVerdict(p, verdict) {
  if (verdict.ok) {
    p.textContent = `✔ ${verdict.message}`;
  } else if (verdict.not_yet_valid) {
    p.textContent = `⏳ ${verdict.message}`;
  } else {
    p.textContent = `✘ Refused (${verdict.code}): ${verdict.message}`;
  }
  p.className = 'verdict ' + (verdict.ok || verdict.not_yet_valid ? 'ok' : 'bad');
}

async function connect(name) {
  clearErrors();
  $('suggest-chain').hidden = true;
  const label = WALLETS[name];
  const w = window[name];
  if (!w) {
    showError('wallet', `${label} is not installed in this browser. Install the ${label} extension, reload this page, or try the other wallet.`);
    return;
  }
  $('wallet-status').textContent = `Asking ${label} to connect to ${settings.chain_id}…`;
  try {
    await w.enable(settings.chain_id);
  } catch (e) {
    $('wallet-status').textContent = 'Not connected.';
    if (typeof w.experimentalSuggestChain === 'function') {
      pendingWallet = { w, name };
      $('suggest-chain').hidden = false;
      showError('wallet', `${label} did not connect to ${settings.chain_id}: ${messageOf(e)}. If it does not know this chain, add it with the button below.`);
    } else {
      showError('wallet', `${label} did not connect to ${settings.chain_id}: ${messageOf(e)}.`);
    }
    return;
  }
  try {
    walletKey = await w.getKey(settings.chain_id);
  } catch (e) {
    $('wallet-status').textContent = 'Not connected.';
    showError('wallet', `${label} did not share its key: ${messageOf(e)}.`);
    return;
  }
  wallet = w;
  $('wallet-status').textContent = `Connected to ${label}: ${walletKey.name ? walletKey.name + ', ' : ''}${walletKey.bech32Address}`;
}

async function suggestChain() {
  if (!pendingWallet) return;
  clearErrors();
  try {
    await pendingWallet.w.experimentalSuggestChain(settings.suggest_chain);
  } catch (e) {
    showError('wallet', `the wallet did not add ${settings.chain_id}: ${messageOf(e)}.`);
    return;
  }
  $('suggest-chain').hidden = true;
  await connect(pendingWallet.name);
}

function formValue() {
  const minutes = Number($('lifetime').value);
  const notBefore = $('not_before').value;
  return {
    wallet_pubkey: bytesToBase64(walletKey.pubKey),
    wallet_address: walletKey.bech32Address,
    agent_key: $('agent_key').value,
    agent_id: $('agent_id').value,
    every_model: $('every_model').checked,
    models: $('models').value.split('\n'),
    lifetime_seconds: Number.isFinite(minutes) && minutes > 0 ? Math.round(minutes * 60) : 0,
    not_before: notBefore ? new Date(notBefore).toISOString() : '',
    beneficiary: $('beneficiary').value,
  };
}

async function sign(event) {
  event.preventDefault();
  clearErrors();
  $('result').hidden = true;
  if (!wallet) {
    showError('wallet', 'Connect a wallet first: the passport is signed by your wallet\'s key.');
    $('connect-keplr').focus();
    return;
  }
  const status = $('sign-status');
  const button = $('sign');
  button.disabled = true;
  try {
    status.textContent = 'Building the passport…';
    const unsigned = await api('/api/unsigned', formValue());
    status.textContent = 'Waiting for your wallet: check the data it shows and approve.';
    const a = unsigned.sign_arbitrary;
    let signed;
    try {
      signed = await wallet.signArbitrary(a.chain_id, a.signer, a.data);
    } catch (e) {
      throw { field: 'wallet', message: `The wallet did not sign: ${messageOf(e)}. Nothing was minted.` };
    }
    status.textContent = 'Checking the signature…';
    const result = await api('/api/attach', { envelope: unsigned.envelope, signature: signed.signature });
    status.textContent = 'Done.';
    showVerdict($('result-verdict'), result.verdict);
    $('passport-out').value = result.passport;
    fillWindow($('result-window'), result.window);
    $('next-command').textContent = result.next;
    $('copy-status').textContent = '';
    $('result').hidden = false;
    $('result-title').focus();
  } catch (e) {
    status.textContent = '';
    showError(e.field || 'form', e.message || messageOf(e));
  } finally {
    button.disabled = false;
  }
}

async function decode(event) {
  event.preventDefault();
  clearErrors();
  $('decoded').hidden = true;
  try {
    const d = await api('/api/decode', { passport: $('passport').value });
    showVerdict($('decoded-verdict'), d.verdict);
    const facts = $('decoded-facts');
    if (d.window) {
      fillWindow(facts, d.window);
      const add = (name, value) => {
        const dt = document.createElement('dt');
        dt.textContent = name;
        const dd = document.createElement('dd');
        dd.textContent = value;
        facts.append(dt, dd);
      };
      add('Passport id', d.passport_id);
      add('Envelope SHA-256', d.envelope_sha256);
      add('Derived address', d.derived_address.address
        ? `${d.derived_address.address} (${d.derived_address.matches ? 'matches' : 'DOES NOT MATCH principal_address'})`
        : 'principal_pubkey is not a compressed secp256k1 key');
    } else {
      facts.replaceChildren();
    }
    $('decoded-json').textContent = JSON.stringify(d.envelope, null, 2);
    $('decoded').hidden = false;
    $('decoded-title').focus();
  } catch (e) {
    showError(e.field || 'passport', e.message || messageOf(e));
  }
}

async function copy(text, what) {
  const status = $('copy-status');
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = `${what} copied.`;
  } catch (e) {
    status.textContent = `The browser did not allow copying (${messageOf(e)}): select the text and copy it by hand.`;
  }
}

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role=tab]')) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute('aria-controls')).hidden = !on;
  }
  tab.focus();
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role=tab]')];
  for (const [i, tab] of tabs.entries()) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) {
        e.preventDefault();
        selectTab(tabs[(i + step + tabs.length) % tabs.length]);
      } else if (e.key === 'Home') {
        e.preventDefault();
        selectTab(tabs[0]);
      } else if (e.key === 'End') {
        e.preventDefault();
        selectTab(tabs[tabs.length - 1]);
      }
    });
  }
}

async function start() {
  setUpTabs();
  try {
    settings = await api('/api/config');
  } catch (e) {
    $('chain-line').textContent = 'The page could not load its settings.';
    showError('form', e.message);
    return;
  }
  $('chain-line').textContent = `Chain ${settings.chain_id} · addresses ${settings.prefix}1… · passport-gate ${settings.version}`;
  const maxMinutes = Math.floor(settings.max_ttl_seconds / 60);
  $('max-minutes').textContent = String(maxMinutes);
  $('lifetime').max = String(maxMinutes);
  $('lifetime').value = String(Math.min(60, Math.max(1, maxMinutes)));
  $('connect-keplr').addEventListener('click', () => connect('keplr'));
  $('connect-leap').addEventListener('click', () => connect('leap'));
  $('suggest-chain').addEventListener('click', suggestChain);
  $('mint-form').addEventListener('submit', sign);
  $('decode-form').addEventListener('submit', decode);
  $('copy-passport').addEventListener('click', () => copy($('passport-out').value, 'Passport'));
  $('copy-command').addEventListener('click', () => copy($('next-command').textContent, 'Command'));
  $('every_model').addEventListener('change', () => { $('models').disabled = $('every_model').checked; });
  document.body.dataset.ready = 'true';
}

// Nothing fails only in the console: an unexpected error is shown on the page.
window.addEventListener('error', (e) => showError('form', `Unexpected error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => showError('form', `Unexpected error: ${messageOf(e.reason)}`));
document.addEventListener('DOMContentLoaded', start);
