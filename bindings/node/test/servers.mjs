// Real processes on loopback for the SDK tests: mockllm (a third-party OpenAI-compatible
// server from PyPI, run by the Python in PASSPORT_GATE_PYTHON), the real
// `passport-gate serve` binary in front of it, and a fault-injecting proxy. Every wait
// is bounded.
import { spawn } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import { existsSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { createConnection, createServer as netServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const CHAIN = 'gonka-test';
export const ALLOWED_MODEL = 'mock-allowed';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = netServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port, child, what, ms = 30000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const ok = await new Promise((resolve) => {
      const c = createConnection({ host: '127.0.0.1', port }, () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port} within ${ms} ms`);
}

export async function stop(child) {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
  await exited;
  clearTimeout(timer);
}

export async function startMockllm() {
  const dir = mkdtempSync(join(tmpdir(), 'pg-mockllm-'));
  const responses = join(dir, 'responses.yml');
  writeFileSync(responses, 'responses:\n  "hello": "hi from mockllm"\ndefaults:\n  unknown_response: "hi from mockllm"\n');
  const port = await freePort();
  // Resolved here: the child runs in its own directory.
  const python = process.env.PASSPORT_GATE_PYTHON ? resolve(process.env.PASSPORT_GATE_PYTHON) : 'python3';
  const child = spawn(
    python,
    ['-m', 'uvicorn', 'mockllm.server:app', '--host', '127.0.0.1', '--port', String(port), '--log-level', 'warning'],
    { cwd: dir, env: { ...process.env, MOCKLLM_RESPONSES_FILE: responses }, stdio: ['ignore', 'ignore', openSync(join(dir, 'log'), 'w')] },
  );
  await waitForPort(port, child, 'mockllm');
  return { child, url: `http://127.0.0.1:${port}` };
}

export async function startGateway(upstream) {
  const bin = resolve(process.env.PASSPORT_GATE_BIN ?? join(REPO, 'target', 'debug', 'passport-gate'));
  if (!existsSync(bin)) throw new Error(`${bin} not found: run \`cargo build\` first or set PASSPORT_GATE_BIN`);
  const dir = mkdtempSync(join(tmpdir(), 'pg-gateway-'));
  const [port, admin] = [await freePort(), await freePort()];
  const config = join(dir, 'gateway.toml');
  writeFileSync(
    config,
    `[server]
listen = "127.0.0.1:${port}"
admin_listen = "127.0.0.1:${admin}"
upstream = "${upstream}"
response_timeout_ms = 10000
shutdown_grace_seconds = 1

[agent_envelope]
enabled = true
chain_id = "${CHAIN}"
mode = "required"
replay_protection = true

# Records on disk in the test's directory; the SDK's retry after an upstream 503 goes through.
[replay]
data_dir = "${dir}"
release_on_retryable = true

[attribution]
file = "${join(dir, 'attribution.jsonl')}"
`,
  );
  const log = openSync(join(dir, 'gateway.log'), 'w');
  const child = spawn(bin, ['serve', '--config', config], { cwd: dir, stdio: ['ignore', log, log] });
  await waitForPort(port, child, 'passport-gate serve');
  return { child, baseURL: `http://127.0.0.1:${port}/v1` };
}

/** Forwards to `upstream`, except that the first `failures` requests get `status` at once. */
export async function startFaultProxy(upstream, status, failures) {
  const seen = [];
  const target = new URL(upstream);
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      seen.push(req.headers);
      if (seen.length <= failures) {
        res.writeHead(status, { 'retry-after-ms': '10', 'content-length': '0' });
        res.end();
        return;
      }
      const body = Buffer.concat(chunks);
      const up = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (upRes) => {
          res.writeHead(upRes.statusCode, { 'content-type': upRes.headers['content-type'] ?? '' });
          upRes.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, seen, url: `http://127.0.0.1:${server.address().port}` };
}
