// DNS over HTTPS against a real DNS server: BIND 9 (`named`) serves a zone with ATP's records and
// answers RFC 8484 queries; the package discovers, reads records and verifies a signature through
// it (resolveAtp, dohQuery, verifyMessage / evaluateAts with { dohUrl }), with GET and POST.
// BIND's DoH listener speaks only HTTP/2 without TLS (h2c), which fetch does not, so a small
// HTTP/1.1 -> h2c bridge stands in front of it (public resolvers speak HTTP/1.1 and h2 over TLS).
// SKIPPED when `named` is not installed.
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { join } from 'node:path';
import { dohQuery, evaluateAts, generateDomainKey, resolveAtp, signMessage, verifyMessage } from 'atp-wasm';
import { checkCount, eq, freePort, ok, rejects, scratch, sleep } from './lib.mjs';

const named = ['/usr/sbin/named', '/usr/bin/named'].find((p) => existsSync(p));
if (!named) {
  console.log('doh-bind.mjs: SKIPPED (BIND `named` is not installed: apt-get install bind9)');
  process.exit(0);
}

const key = generateDomainKey();
const longTxt = `v=atp1 ${Array.from({ length: 30 }, (_, i) => `allow=ip:10.${i}.0.0/16`).join(' ')} allow=domain:mx.doh.test deny=all`;
const quoted = (s) => s.match(/.{1,200}/g).map((p) => `"${p}"`).join(' '); // several character-strings
const zone = `$TTL 60
@ IN SOA ns.doh.test. admin.doh.test. 1 3600 600 86400 60
@ IN NS ns.doh.test.
ns IN A 127.0.0.1
_atp IN SVCB 2 backup.doh.test. alpn="atp/1" port=7444
_atp IN SVCB 1 atp.doh.test. alpn="atp/1,h2" port=17443 ipv4hint=192.0.2.7
atp IN A 192.0.2.7
atp IN AAAA 2001:db8::7
mx IN A 192.0.2.25
ats._atp IN TXT ${quoted(longTxt)}
ats._atp IN TXT "v=spf1 -all"
default.atk._atp IN TXT "v=atp1 k=ed25519 p=${key.publicKey}"
_agent.alias IN SVCB 0 svc.doh.test.
svc IN SVCB 1 . port=8443
_atp._tcp.srv IN SRV 1 0 0 mx.doh.test.
old.atk._atp IN CNAME default.atk._atp.doh.test.
`;
const dir = scratch('bind');
const dnsPort = await freePort();
const dohPort = await freePort();
writeFileSync(join(dir, 'doh.zone'), zone);
writeFileSync(join(dir, 'named.conf'), `controls { };
http local-doh { endpoints { "/dns-query"; }; };
options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  listen-on port ${dnsPort} { 127.0.0.1; };
  listen-on port ${dohPort} tls none http local-doh { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  allow-query { any; };
  dnssec-validation no;
};
zone "doh.test" { type primary; file "${dir}/doh.zone"; };
`);
const logPath = join(dir, 'named.log');
const out = openSync(logPath, 'a');
const bind = spawn(named, ['-g', '-c', join(dir, 'named.conf')], { stdio: ['ignore', out, out] });
process.on('exit', () => {
  try {
    process.kill(bind.pid, 'SIGTERM');
  } catch {}
});
for (let i = 0; ; i++) {
  const log = readFileSync(logPath, 'utf8');
  if (/ running$/m.test(log)) break; // the last start-up line (not 'running on Linux…')
  if (log.includes('exiting (due to fatal error)') || bind.exitCode !== null || i > 400) {
    throw new Error(`named did not start:\n${log}`);
  }
  await sleep(50);
}

// The HTTP/1.1 -> h2c bridge.
const h2 = http2.connect(`http://127.0.0.1:${dohPort}`);
let forwarded = 0;
const bridge = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    forwarded++;
    const body = Buffer.concat(chunks);
    const headers = { ':method': req.method, ':path': req.url, accept: 'application/dns-message' };
    if (req.method === 'POST') Object.assign(headers, { 'content-type': req.headers['content-type'], 'content-length': body.length });
    const up = h2.request(headers);
    const parts = [];
    up.on('response', (h) => {
      up.on('data', (c) => parts.push(c));
      up.on('end', () => {
        res.writeHead(h[':status'], { 'content-type': h['content-type'] || 'application/octet-stream' });
        res.end(Buffer.concat(parts));
      });
    });
    up.on('error', (e) => {
      res.writeHead(502);
      res.end(String(e));
    });
    up.end(req.method === 'POST' ? body : undefined);
  });
});
const bridgePort = await freePort();
await new Promise((r) => bridge.listen(bridgePort, '127.0.0.1', r));
const dohUrl = `http://127.0.0.1:${bridgePort}/dns-query`;

try {
  for (const dohMethod of ['GET', 'POST']) {
    const doh = { dohUrl, dohMethod };
    const d = await resolveAtp('doh.test', doh);
    eq(d.endpoints.map((e) => [e.url, e.alpn]), [['https://atp.doh.test:17443', ['atp/1', 'h2']],
      ['https://backup.doh.test:7444', ['atp/1']]], `${dohMethod}: SVCB endpoints sorted by priority`);
    eq(d.ats, longTxt, `${dohMethod}: the ATS record (several strings joined, the SPF record ignored)`);
    eq(d.keys.map((k) => [k.keyId, k.publicKey]), [['default.atk._atp.doh.test', key.publicKey]], `${dohMethod}: ATK`);
    eq((await resolveAtp('alias.doh.test', doh)).endpoints.map((e) => e.url), ['https://svc.doh.test:8443'],
      `${dohMethod}: _agent alias -> svc, target "." = svc`);
    eq((await resolveAtp('srv.doh.test', doh)).endpoints.map((e) => e.url), ['https://mx.doh.test:7443'],
      `${dohMethod}: SRV fallback, port 0 = 7443`);
    eq((await resolveAtp('nothing.doh.test', doh)).endpoints, [], `${dohMethod}: NXDOMAIN = no endpoints`);
    eq(await dohQuery('atp.doh.test', 'A', doh), ['192.0.2.7'], `${dohMethod}: A`);
    eq(await dohQuery('atp.doh.test', 'AAAA', doh), ['2001:db8::7'], `${dohMethod}: AAAA`);
    eq((await dohQuery('_atp.doh.test', 'SVCB', doh)).sort(), ['1 atp.doh.test. alpn="atp/1,h2" port=17443 ipv4hint=192.0.2.7',
      '2 backup.doh.test. alpn="atp/1" port=7444'], `${dohMethod}: SVCB`);
    eq(await dohQuery('old.atk._atp.doh.test', 'TXT', doh), [`v=atp1 k=ed25519 p=${key.publicKey}`], `${dohMethod}: CNAME followed`);
    eq(await dohQuery('_atp._tcp.srv.doh.test', 'SRV', doh), ['1 0 0 mx.doh.test.'], `${dohMethod}: SRV`);

    const now = Math.floor(Date.now() / 1000);
    const signed = signMessage(JSON.stringify({ from: 'agent@doh.test', to: 'bob@beta.test', timestamp: now,
      nonce: `msg-doh-${dohMethod}`, type: 'message', payload: { body: 'verified over DoH' } }), key.privateKeyPem, 'default', 'doh.test');
    eq(await verifyMessage(signed, doh), true, `${dohMethod}: signature verified with the key found over DoH`);
    const other = signMessage(signed, generateDomainKey().privateKeyPem, 'default', 'doh.test');
    eq((await rejects(verifyMessage(other, doh), 'wrong key')).code, '550 5.7.28', `${dohMethod}: wrong key refused`);
    const unknown = signMessage(signed, key.privateKeyPem, 'nokey', 'doh.test');
    eq((await rejects(verifyMessage(unknown, doh), 'no record')).code, '550 5.7.29', `${dohMethod}: no ATK record`);
    eq((await evaluateAts(longTxt, '192.0.2.25', doh)).directive, 'allow=domain:mx.doh.test', `${dohMethod}: ATS domain: over DoH`);
    eq((await evaluateAts(longTxt, '10.29.1.1', doh)).directive, 'allow=ip:10.29.0.0/16', `${dohMethod}: ATS ip:`);
    eq((await evaluateAts(longTxt, '192.0.2.99', doh)).result, 'fail', `${dohMethod}: ATS deny=all`);
  }
  const refused = await rejects(resolveAtp('example.com', { dohUrl }), 'a zone BIND does not serve');
  eq(refused.kind, 'dns', `REFUSED is a DNS error: ${refused.message}`);
  ok(forwarded > 30, `queries went through BIND (${forwarded})`);
} finally {
  bridge.close();
  h2.close();
  process.kill(bind.pid, 'SIGTERM');
}
console.log(`doh-bind.mjs: ${checkCount()} checks passed`);
