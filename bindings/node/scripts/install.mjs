// npm's `install` step for a project that depends on this package (`npm install
// path/to/bindings/node`, or a tarball from `npm pack`): builds the native addon with
// cargo when passport_gate.node is not already here (a tarball made after
// `npm run build` carries it). Skipped for `npm ci` / `npm install` inside this
// directory, where `npm run build` is the step (the tests pick the profile).
// npm hides this script's output unless it runs with --foreground-scripts; a build from
// source takes minutes on a small machine.
import { existsSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(here, 'passport_gate.node');
const invokedHere = process.env.INIT_CWD !== undefined && realpathSync(process.env.INIT_CWD) === realpathSync(here);

if (invokedHere) {
  console.log('passport-gate: installing in its own directory; `npm run build` builds the addon');
} else if (existsSync(addon)) {
  console.log('passport-gate: using the prebuilt passport_gate.node');
} else if (!existsSync(join(here, '..', '..', 'Cargo.toml')) || !existsSync(join(here, 'src', 'lib.rs'))) {
  console.error(
    'passport-gate: no prebuilt passport_gate.node for this platform and no passport-gate source tree to build it from: ' +
      'install from the repository (npm install path/to/passport-gate/bindings/node, which needs a Rust toolchain) ' +
      'or from a tarball made there with `npm run build && npm pack`',
  );
  process.exit(1);
} else {
  console.log('passport-gate: building the native addon with cargo (a few minutes the first time; npm shows cargo\'s progress with --foreground-scripts)');
  await import('./build.mjs');
}
