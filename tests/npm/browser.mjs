// The browser entry (web.js) in headless Chromium: `await init()` fetches the .wasm next to the
// module, then the tools work and AtpClient talks to a real atp-native server. The page is served
// by a small Node server that also proxies /.well-known/atp/v1/ to atp-native, so the page and the
// API share an origin (atp-native sends no CORS headers). The page posts its results back.
// SKIPPED when Chromium is not installed.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { extname, join, normalize } from 'node:path';
import { checkCount, eq, freePort, ok, scratch, startServer } from './lib.mjs';

const chromium = [process.env.CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser']
  .find((p) => p && existsSync(p));
if (!chromium) {
  console.log('browser.mjs: SKIPPED (no Chromium: apt-get install chromium)');
  process.exit(0);
}

const atp = await startServer('browser.test');
const pkg = new URL('./node_modules/atp-wasm/', import.meta.url).pathname;
const page = `<!doctype html><meta charset="utf-8"><title>atp-wasm</title>
<script type="module">
import init, { AtpClient, AtpError, canonicalize, generateDomainKey, signMessage, verifyMessage, dnsRecords } from '/pkg/web.js';
const out = {};
try {
  await init();
  out.canonical = canonicalize('{"b":1e-05,"a":[1.0]}');
  const key = generateDomainKey();
  const msg = JSON.stringify({ from: 'w@web.test', to: 'x@y.test', timestamp: 1800000000, nonce: 'msg-b-1', type: 'message', payload: { body: 'hi' } });
  out.verified = verifyMessage(signMessage(msg, key.privateKeyPem, 'default', 'web.test'), key.publicKey);
  out.zone = dnsRecords('web.test', '192.0.2.1', key.publicKey).length;
  const alice = new AtpClient({ agentId: 'b-alice', password: 'pw', server: location.origin });
  const bob = new AtpClient({ agentId: 'b-bob', password: 'pw', server: location.origin });
  await alice.register();
  await bob.register();
  out.sent = (await alice.send('b-bob', { subject: 'hi', body: 'from a browser' })).status;
  out.received = (await bob.recv({ wait: 5, pollInterval: 100 })).map((m) => [m.from, m.payload.body]);
  try { await alice.send('nobody', { body: 'x' }); } catch (e) { out.error = [e instanceof AtpError, e.status, e.code]; }
  out.userAgent = navigator.userAgent.includes('Chrome');
} catch (e) {
  out.failure = String(e && e.stack || e);
}
await fetch('/result', { method: 'POST', body: JSON.stringify(out) });
</script>`;

let resolveResult;
const result = new Promise((r) => (resolveResult = r));
const types = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end(page);
  }
  if (url.pathname === '/result') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      res.end('ok');
      resolveResult(JSON.parse(Buffer.concat(chunks).toString()));
    });
    return;
  }
  if (url.pathname.startsWith('/pkg/')) {
    const file = normalize(join(pkg, url.pathname.slice(5)));
    if (!file.startsWith(pkg) || !existsSync(file)) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' });
    return res.end(readFileSync(file));
  }
  if (url.pathname.startsWith('/.well-known/atp/v1/')) {
    const up = http.request(`${atp.url}${req.url}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
    return;
  }
  res.writeHead(404);
  res.end();
});
const port = await freePort();
await new Promise((r) => server.listen(port, '127.0.0.1', r));
const profile = scratch('chromium');
const browser = spawn(chromium, ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--user-data-dir=${profile}`, `http://127.0.0.1:${port}/`], { stdio: 'ignore' });
try {
  const out = await Promise.race([result, new Promise((_, no) => setTimeout(() => no(new Error('no result from Chromium in 60 s')), 60_000))]);
  ok(!out.failure, `the page ran: ${out.failure}`);
  eq(out.canonical, '{"a":[1],"b":1e-05}', 'canonicalize in Chromium');
  eq([out.verified, out.zone], [true, 4], 'sign, verify, dnsRecords in Chromium');
  eq([out.sent, out.received], ['accepted', [['b-alice@browser.test', 'from a browser']]], 'AtpClient in Chromium');
  eq(out.error, [true, 404, '550 5.1.1'], 'AtpError in Chromium');
  ok(out.userAgent, 'it was Chromium');
} finally {
  try {
    process.kill(browser.pid, 'SIGTERM');
  } catch {}
  server.close();
  atp.stop();
}
console.log(`browser.mjs: ${checkCount()} checks passed`);
