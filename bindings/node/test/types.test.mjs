// index.d.ts describes what index.js exports: the README's usage compiles against it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

test('the README usage type-checks against index.d.ts', () => {
  const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
  const usage = fileURLToPath(new URL('./usage.ts', import.meta.url));
  const args = [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', usage];
  execFileSync(process.execPath, args, { stdio: 'inherit' });
});

test('every name index.d.ts declares is exported by index.js', () => {
  const pg = require('../index.js');
  for (const name of ['AgentKey', 'PrincipalKey', 'Signer', 'PassportGateError', 'PASSPORT_HEADER', 'SIGNATURE_HEADER', 'mint', 'mintUnsigned', 'attachSignature', 'inspect', 'verify', 'signRequest', 'headers', 'passportFetch', 'GonkaSigner', 'gonkaSigner', 'gonkaAddress', 'gonkaSign', 'gonkaVerify', 'parseEndpoint', 'transferAddresses', 'monotonicTimestampNs']) {
    assert.notEqual(pg[name], undefined, name);
  }
});
