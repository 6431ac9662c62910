// The browser app (www/dist) in headless Chromium, driven by Playwright, against real atp-native
// servers: alpha.test (serving the app with --web) and beta.test, both in one --home so that they
// find each other through the local registry, with self-signed TLS (the browser contexts ignore
// certificate errors). BIND (`named`) serves the two domains' SVCB/ATS/ATK records, and a small
// HTTP/1.1 -> h2c bridge puts its DoH listener in front of the browser (BIND's DoH speaks only
// h2c without TLS) with CORS, so the page verifies signatures over DNS over HTTPS.
//
//   alice (alpha.test, desktop) registers, sends to bob@beta.test and to herself;
//   bob (beta.test, phone-sized, page from alpha's origin: CORS via --cors-origin) sees the
//   message arrive on the live inbox stream, opens it, verifies its signature over DoH and with a
//   typed key, and deletes it (acknowledged: gone from the server);
//   alice's own mail shows "not signed (local delivery)"; a wrong password and an unreachable
//   server show their errors; the DNS tools generate a key with records and check alpha.test.
// alpha.test runs an installed binary ($ATP_INSTALLED_BIN: `cargo install --path atp-native`, copied
// into an empty directory and started there) with `--web` alone, so the app alice uses is the copy
// embedded at build time; beta.test serves www/dist with --web-dir.
// Screenshots go to $ATP_WWW_SCREENSHOTS. Environment: ATP_BIN, ATP_INSTALLED_BIN, ATP_WWW_DIST,
// ATP_WASM_NODE (atp-wasm's node.mjs), CHROMIUM.
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const { generateDomainKey } = await import(process.env.ATP_WASM_NODE);
const ATP_BIN = process.env.ATP_BIN;
const DIST = process.env.ATP_WWW_DIST;
const SHOTS = process.env.ATP_WWW_SCREENSHOTS;
const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/lib/chromium/chromium'].find((p) => p && existsSync(p));
if (!CHROMIUM) throw new Error('no Chromium (apt-get install chromium, or set CHROMIUM)');
const NAMED = ['/usr/sbin/named', '/usr/bin/named'].find((p) => existsSync(p));
mkdirSync(SHOTS, { recursive: true });

const cleanups = [];
const cleanup = () => {
  while (cleanups.length) {
    try {
      cleanups.pop()();
    } catch {}
  }
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
function scratch(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `atp-www-${prefix}-`));
  cleanups.unshift(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
let checks = 0;
function ok(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  checks++;
  console.log(`  ok ${what}`);
}

// ---- two servers in one home ----
const home = scratch('home');
mkdirSync(join(home, 'keys'), { recursive: true, mode: 0o700 });
const key = generateDomainKey(); // both servers of the home sign with <home>/keys/default.key
writeFileSync(join(home, 'keys', 'default.key'), key.privateKeyPem, { mode: 0o600 });
const ports = { alpha: await freePort(), beta: await freePort() };
const alphaUrl = `https://127.0.0.1:${ports.alpha}`;
const betaUrl = `https://127.0.0.1:${ports.beta}`;

async function startAtp(domain, port, extra, bin = ATP_BIN, cwd = undefined) {
  const logPath = join(home, `${domain}.log`);
  const out = openSync(logPath, 'a');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ATP_')));
  const args = ['server', 'start', '--domain', domain, '--port', String(port), '--host', '127.0.0.1', '--home', home, ...extra];
  const child = spawn(bin, args, { stdio: ['ignore', out, out], env, cwd });
  cleanups.push(() => process.kill(child.pid, 'SIGTERM'));
  const log = () => readFileSync(logPath, 'utf8');
  for (const deadline = Date.now() + 60_000; !log().includes('Starting ATP Server');) {
    if (child.exitCode !== null) throw new Error(`atp (${domain}) exited ${child.exitCode}:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`atp (${domain}) did not start:\n${log()}`);
    await sleep(25);
  }
  return { log, pid: child.pid };
}
// The installed binary, alone in an empty directory: nothing but the binary can provide the app.
const installed = scratch('installed');
const installedBin = join(installed, 'atp');
cpSync(process.env.ATP_INSTALLED_BIN || ATP_BIN, installedBin);
chmodSync(installedBin, 0o755);
const emptyCwd = scratch('cwd');
const alpha = await startAtp('alpha.test', ports.alpha, ['--web'], installedBin, emptyCwd);
ok(/Serving the web app at \/ from the copy embedded in the binary/.test(alpha.log()), 'alpha serves the app embedded in the installed binary');
const beta = await startAtp('beta.test', ports.beta, ['--web', '--web-dir', DIST, '--cors-origin', alphaUrl]);
console.log(`alpha.test ${alphaUrl} (pid ${alpha.pid}), beta.test ${betaUrl} (pid ${beta.pid}), home ${home}`);

// ---- BIND with the two zones, and the DoH bridge ----
let dohUrl = null;
if (NAMED) {
  const dir = scratch('bind');
  const dnsPort = await freePort();
  const h2cPort = await freePort();
  let zones = '';
  for (const [name, port] of [['alpha.test', ports.alpha], ['beta.test', ports.beta]]) {
    writeFileSync(join(dir, `${name}.zone`), `$TTL 60
@ IN SOA ns.${name}. admin.${name}. 1 3600 600 86400 60
@ IN NS ns.${name}.
ns IN A 127.0.0.1
_atp IN SVCB 1 atp.${name}. alpn="atp/1" port=${port}
atp IN A 127.0.0.1
ats._atp IN TXT "v=atp1 allow=ip:127.0.0.1 deny=all"
default.atk._atp IN TXT "v=atp1 k=ed25519 p=${key.publicKey}"
`);
    zones += `zone "${name}" { type primary; file "${dir}/${name}.zone"; };\n`;
  }
  writeFileSync(join(dir, 'named.conf'), `controls { };
http local-doh { endpoints { "/dns-query"; }; };
options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  listen-on port ${dnsPort} { 127.0.0.1; };
  listen-on port ${h2cPort} tls none http local-doh { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { any; };
  dnssec-validation no;
};
${zones}`);
  const logPath = join(dir, 'named.log');
  const out = openSync(logPath, 'a');
  const bind = spawn(NAMED, ['-g', '-c', join(dir, 'named.conf')], { stdio: ['ignore', out, out] });
  cleanups.push(() => process.kill(bind.pid, 'SIGTERM'));
  for (let i = 0; ; i++) {
    const log = readFileSync(logPath, 'utf8');
    if (/ running$/m.test(log)) break;
    if (log.includes('exiting (due to fatal error)') || bind.exitCode !== null || i > 400) throw new Error(`named did not start:\n${log}`);
    await sleep(50);
  }
  const h2 = http2.connect(`http://127.0.0.1:${h2cPort}`);
  cleanups.push(() => h2.close());
  const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'content-type, accept' };
  const bridge = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { ...cors, 'access-control-allow-methods': 'GET, POST' });
      return res.end();
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = { ':method': req.method, ':path': req.url, accept: 'application/dns-message' };
      if (req.method === 'POST') Object.assign(headers, { 'content-type': req.headers['content-type'], 'content-length': body.length });
      const up = h2.request(headers);
      const parts = [];
      up.on('response', (h) => {
        up.on('data', (c) => parts.push(c));
        up.on('end', () => {
          res.writeHead(h[':status'], { ...cors, 'content-type': h['content-type'] || 'application/octet-stream' });
          res.end(Buffer.concat(parts));
        });
      });
      up.on('error', (e) => {
        res.writeHead(502, cors);
        res.end(String(e));
      });
      up.end(req.method === 'POST' ? body : undefined);
    });
  });
  const bridgePort = await freePort();
  await new Promise((r) => bridge.listen(bridgePort, '127.0.0.1', r));
  cleanups.push(() => bridge.close());
  dohUrl = `http://127.0.0.1:${bridgePort}/dns-query`;
  console.log(`BIND on ${dnsPort}, DoH bridge ${dohUrl}`);
} else {
  console.log('named is not installed (apt-get install bind9): the DoH checks are SKIPPED, signatures are verified with the typed key');
}

// ---- the browser ----
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
});
cleanups.push(() => browser.close());
const pageErrors = [];
async function newPage(viewport, name) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.stack || e}`));
  page.setDefaultTimeout(15_000);
  return page;
}
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const query = `?poll=1${dohUrl ? `&doh=${encodeURIComponent(dohUrl)}` : ''}`;
const desktop = { width: 1200, height: 800 };
const phone = { width: 390, height: 800 };

try {
  // alice on alpha.test (the page's own server)
  const a = await newPage(desktop, 'alice');
  await a.goto(`${alphaUrl}/${query}`);
  await a.waitForSelector('body[data-ready]');
  ok(await a.inputValue('#si-server') === alphaUrl, 'the server field defaults to the page origin');
  await shot(a, '01-signin');
  await a.fill('#si-agent', 'alice');
  await a.fill('#si-password', 'pw-alice');
  await a.click('#register-submit');
  await a.waitForSelector('#view-inbox:not([hidden])');
  ok((await a.textContent('#who')) === 'alice@alpha.test', 'alice registered and signed in');
  ok(await a.isVisible('#inbox-empty'), 'her inbox is empty');

  // bob on beta.test, page from alpha's origin (CORS), phone-sized
  const b = await newPage(phone, 'bob');
  await b.goto(`${alphaUrl}/${query}&server=${encodeURIComponent(betaUrl)}`);
  await b.waitForSelector('body[data-ready]');
  await b.fill('#si-agent', 'bob');
  await b.fill('#si-password', 'pw-bob');
  await b.click('#register-submit');
  await b.waitForSelector('#view-inbox:not([hidden])');
  ok((await b.textContent('#who')) === 'bob@beta.test', 'bob registered on beta.test from alpha\'s page (CORS)');
  await shot(b, '02-bob-inbox-empty-phone');

  // alice writes to bob (keyboard: Ctrl+Enter) and to herself
  await a.click('a[data-nav="compose"]');
  await a.fill('#c-to', 'bob@beta.test');
  await a.fill('#c-subject', 'Hello from the browser');
  await a.fill('#c-body', 'Hi Bob,\nthis was sent from the ATP web app.\n— alice');
  await a.press('#c-body', 'Control+Enter');
  await a.waitForSelector('#compose-result.ok');
  ok((await a.textContent('#compose-result')).includes('Sent to bob@beta.test'), 'alice sent to bob@beta.test');
  await shot(a, '03-alice-sent');
  await a.fill('#c-to', 'alice');
  await a.fill('#c-subject', 'Note to self');
  await a.fill('#c-body', 'local mail');
  await a.click('#compose-send');
  await a.waitForSelector('#compose-result.ok');
  await a.fill('#c-to', 'nobody');
  await a.fill('#c-body', 'x');
  await a.click('#compose-send');
  await a.waitForSelector('#compose-result.error');
  ok((await a.textContent('#compose-result')).includes('550 5.1.1'), 'an unknown local recipient shows the server\'s error');
  await shot(a, '04-alice-unknown-recipient');

  // alice's own mail: local delivery, not signed
  await a.click('a[data-nav="inbox"]');
  await a.waitForSelector('#inbox-list a.msg', { timeout: 20_000 });
  await shot(a, '05-alice-inbox');
  await a.click('#inbox-list a.msg');
  await a.waitForSelector('#verify-status.none');
  ok((await a.textContent('#verify-status')).includes('Not signed (local delivery)'), 'local mail: not signed (local delivery)');
  await shot(a, '06-alice-local-message');

  // bob sees it arrive on the stream, opens it with the keyboard, and it verifies
  await b.waitForSelector('#inbox-list a.msg.unread', { timeout: 40_000 });
  ok((await b.textContent('#inbox-list')).includes('alice@alpha.test'), 'the message arrived in bob\'s inbox by itself');
  ok((await b.textContent('#unread-count')) === '1', 'one unread');
  await shot(b, '07-bob-inbox-phone');
  await b.focus('#inbox-list a.msg');
  await b.keyboard.press('Enter');
  await b.waitForSelector('#view-message:not([hidden])');
  ok((await b.textContent('#msg-fields')).includes('this was sent from the ATP web app'), 'the body is shown');
  ok((await b.textContent('#msg-fields')).includes('default.atk._atp.alpha.test'), 'the signing key id is shown');
  if (dohUrl) {
    await b.waitForSelector('#verify-status.ok, #verify-status.bad, #verify-status.warn');
    const text = await b.textContent('#verify-status');
    ok((await b.getAttribute('#verify-status', 'class')).includes('ok') && text.includes('Valid signature from alpha.test'),
      `the signature verified over DoH in the browser: ${text}`);
  }
  await shot(b, '08-bob-message-verified-phone');
  await b.click('#verify-key-box summary');
  await b.fill('#verify-key', generateDomainKey().publicKey);
  await b.click('#verify-key-form button');
  await b.waitForSelector('#verify-status.bad');
  ok((await b.textContent('#verify-status')).includes('Invalid signature'), 'another key: invalid signature');
  await shot(b, '09-bob-wrong-key-phone');
  await b.fill('#verify-key', key.publicKey);
  await b.press('#verify-key', 'Enter');
  await b.waitForSelector('#verify-status.ok');
  ok((await b.textContent('#verify-status')).includes('Valid signature for the key you entered'), 'the right typed key verifies');

  // the inbox is live on the stream; delete acknowledges the message: gone from the server too
  ok((await b.textContent('#poll-status')).includes('Live'), 'bob\'s inbox is live on the stream');
  await b.click('#msg-delete');
  await b.waitForSelector('#view-inbox:not([hidden])');
  await b.waitForSelector('#inbox-empty:not([hidden])');
  ok((await b.locator('#inbox-list a.msg').count()) === 0, 'the deleted message left the inbox');
  // (the page's context: it accepts beta's self-signed certificate)
  const left = await (await b.request.get(`${betaUrl}/.well-known/atp/v1/messages`, {
    headers: { authorization: 'Basic ' + Buffer.from('bob@beta.test:pw-bob').toString('base64') },
  })).json();
  ok(left.count === 0, `the server removed it (GET messages: ${JSON.stringify(left)})`);
  await shot(b, '09b-bob-deleted-phone');

  // wrong password, unreachable server
  const c = await newPage(desktop, 'wrong');
  await c.goto(`${alphaUrl}/${query}`);
  await c.waitForSelector('body[data-ready]');
  await c.fill('#si-agent', 'alice');
  await c.fill('#si-password', 'not-her-password');
  await c.click('#signin-submit');
  await c.waitForSelector('#signin-error:not([hidden])');
  ok((await c.textContent('#signin-error')).includes('Wrong agent id or password'), 'a wrong password is explained');
  ok(await c.evaluate(() => document.activeElement.id) === 'si-password', 'focus returns to the password');
  await shot(c, '10-wrong-password');
  await c.fill('#si-server', `https://127.0.0.1:${await freePort()}`);
  await c.fill('#si-password', 'pw-alice');
  await c.click('#signin-submit');
  await c.waitForFunction(() => document.querySelector('#signin-error').textContent.includes('Cannot reach'));
  ok((await c.textContent('#signin-error')).includes('certificate'), 'an unreachable server mentions the certificate');
  await shot(c, '11-unreachable');
  // a page from beta's origin may not call alpha (alpha allows no other origin)
  const d = await newPage(desktop, 'cors');
  await d.goto(`${betaUrl}/${query}&server=${encodeURIComponent(alphaUrl)}`);
  await d.waitForSelector('body[data-ready]');
  await d.fill('#si-agent', 'alice');
  await d.fill('#si-password', 'pw-alice');
  await d.click('#signin-submit');
  await d.waitForSelector('#signin-error:not([hidden])');
  ok((await d.textContent('#signin-error')).includes(`--cors-origin ${betaUrl}`), 'an origin that is not allowed gets no CORS headers; the error says so');
  await shot(d, '11b-cors-refused');

  // DNS tools
  await a.click('a[data-nav="tools"]');
  await a.fill('#g-domain', 'example.test');
  await a.fill('#g-ip', '192.0.2.7');
  await a.click('#gen-form button[type="submit"]');
  await a.waitForSelector('#gen-out:not([hidden])');
  const records = await a.textContent('#gen-records');
  ok(records.includes('_atp.example.test') && records.includes('ats._atp.example.test') && records.includes('default.atk._atp.example.test'),
    'the tool generated SVCB, ATS and ATK records');
  ok((await a.inputValue('#gen-private')).includes('BEGIN PRIVATE KEY'), 'and a private key');
  if (dohUrl) {
    await a.fill('#k-domain', 'alpha.test');
    await a.click('#check-form button[type="submit"]');
    await a.waitForSelector('#check-out .checks');
    const out = await a.textContent('#check-out');
    ok(out.includes(`https://atp.alpha.test:${ports.alpha}`) && out.includes(key.publicKey) && out.includes('allow=ip:127.0.0.1'),
      'the records of alpha.test were checked over DoH');
    await a.fill('#k-domain', 'missing.test');
    await a.click('#check-form button[type="submit"]');
    await a.waitForFunction(() => /missing\.test|failed/.test(document.querySelector('#check-out').textContent) &&
      !document.querySelector('#check-out').textContent.includes('Looking up'));
    await shot(a, '13-tools-check-missing');
    await a.fill('#k-domain', 'alpha.test');
    await a.click('#check-form button[type="submit"]');
    await a.waitForSelector('#check-out .checks');
  }
  await shot(a, '12-tools');
  const t = await newPage(phone, 'tools-phone');
  await t.goto(`${alphaUrl}/${query}#/tools`);
  await t.waitForSelector('body[data-ready]');
  await shot(t, '14-tools-phone');

  ok(pageErrors.length === 0, `no uncaught errors in the pages ${pageErrors.join('\n')}`);
} catch (e) {
  console.error(e);
  console.error(`alpha.test log:\n${alpha.log()}\nbeta.test log:\n${beta.log()}`);
  process.exitCode = 1;
} finally {
  await browser.close().catch(() => {});
}
if (!process.exitCode) console.log(`app.test.mjs: ${checks} checks passed; screenshots in ${SHOTS}`);
process.exit();
