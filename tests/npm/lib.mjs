// Helpers of the npm package tests: real `atp` servers (atp-native) on free loopback ports in
// temporary homes, stopped by their process id; the reference's Python verifier; tiny asserts.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ADMIN_TOKEN = 'npm-test-admin';
const ATP_BIN = process.env.ATP_BIN;
const REF_PYTHON = process.env.ATP_REF_PYTHON || '';
const HERE = new URL('.', import.meta.url).pathname;

const running = new Set();
function stopAll() {
  for (const s of running) s.stop();
}
process.on('exit', stopAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    stopAll();
    process.exit(130);
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A scratch directory removed at exit. */
export function scratch(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `atp-npm-${prefix}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Starts `atp server start` for `domain`. Options: `tls` (self-signed, default false = --no-tls),
 * `keyPem` (the domain key, written to keys/default.key before the start), `config` (config.toml
 * text), `port`.
 */
export async function startServer(domain, { tls = false, keyPem, config, port } = {}) {
  if (!ATP_BIN) throw new Error('ATP_BIN is not set (the atp binary of atp-native)');
  const home = scratch(domain);
  mkdirSync(join(home, 'keys'), { recursive: true, mode: 0o700 });
  if (keyPem) writeFileSync(join(home, 'keys', 'default.key'), keyPem, { mode: 0o600 });
  if (config) writeFileSync(join(home, 'config.toml'), config);
  port ??= await freePort();
  const args = ['server', 'start', '--domain', domain, '--port', String(port), '--host', '127.0.0.1',
    '--home', home, '--admin-token', ADMIN_TOKEN];
  if (!tls) args.push('--no-tls');
  const logPath = join(home, 'server.log');
  const out = openSync(logPath, 'a');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ATP_')));
  const child = spawn(ATP_BIN, args, { stdio: ['ignore', out, out], env });
  const log = () => readFileSync(logPath, 'utf8');
  const server = {
    domain,
    port,
    home,
    pid: child.pid,
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    log,
    stop() {
      if (running.delete(server)) {
        try {
          process.kill(child.pid, 'SIGTERM');
        } catch {}
      }
    },
  };
  running.add(server);
  const deadline = Date.now() + 60_000;
  while (!log().includes('Starting ATP Server')) {
    if (child.exitCode !== null) throw new Error(`atp exited (${child.exitCode}); its log:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`atp did not start; its log:\n${log()}`);
    await sleep(20);
  }
  return server;
}

/** Admin GET (stats, inspect) of a server; insecure TLS is the caller's process setting. */
export async function admin(server, route) {
  const r = await fetch(`${server.url}/.well-known/atp/v1/${route}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  return { status: r.status, body: await r.json() };
}

/**
 * Runs tests/npm/reference.py with the reference implementation's Python and returns its output
 * (JSON text); null when ATP_REF_PYTHON is not set.
 */
export function reference(...args) {
  if (!REF_PYTHON) return null;
  const r = spawnSync(REF_PYTHON, [join(HERE, 'reference.py'), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`reference.py ${args[0]} failed (${r.status}):\n${r.stderr}`);
  return r.stdout.trim();
}

/** A DNS lookup function over a dns_override-like table { name: [TXT texts] }. */
export function tableLookup(txt) {
  return async (name, type) => (type === 'TXT' ? txt[name] ?? [] : []);
}

let checks = 0;
export function ok(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  checks++;
}
export function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`FAILED: ${what}\n  expected ${e}\n  actual   ${a}`);
  checks++;
}
/** Awaits `p`, which must reject with an AtpError; returns it. */
export async function rejects(p, what) {
  try {
    await p;
  } catch (e) {
    checks++;
    return e;
  }
  throw new Error(`FAILED: ${what}: did not reject`);
}
export function throws(fn, what) {
  try {
    fn();
  } catch (e) {
    checks++;
    return e;
  }
  throw new Error(`FAILED: ${what}: did not throw`);
}
export const checkCount = () => checks;
