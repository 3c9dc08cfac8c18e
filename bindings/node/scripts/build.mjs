// Builds the native addon with cargo (napi-rs) and copies it next to index.js as
// passport_gate.node. `PASSPORT_GATE_PROFILE=debug` builds unoptimized.
import { execFileSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
const profile = process.env.PASSPORT_GATE_PROFILE === 'debug' ? 'debug' : 'release';
const args = ['build', '--locked', '-p', 'passport-gate-node'];
if (profile === 'release') args.push('--release');
execFileSync('cargo', args, { cwd: root, stdio: 'inherit' });
const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
const file = {
  linux: 'libpassport_gate_node.so',
  darwin: 'libpassport_gate_node.dylib',
  win32: 'passport_gate_node.dll',
}[process.platform];
if (!file) throw new Error(`unsupported platform ${process.platform}`);
copyFileSync(join(targetDir, profile, file), join(here, '..', 'passport_gate.node'));
console.log(`built passport_gate.node (${profile})`);
