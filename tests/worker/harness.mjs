// Test harness of the atp-worker suite: BIND (DNS + DoH), an HTTP/1.1 -> h2c DoH bridge, a native
// `atp` server and the built worker in workerd through Miniflare. Every process started here is
// stopped by its own PID (or handle) in `stopAll()`.
import { createRequire } from "node:module";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const WORKER_DIR = path.join(ROOT, "atp-worker");
// The npm tools live in atp-worker/node_modules (scripts/install-worker-tools.sh).
const require = createRequire(path.join(WORKER_DIR, "package.json"));
export const { Miniflare } = await import(require.resolve("miniflare"));

const cleanups = [];
export async function stopAll() {
  while (cleanups.length) {
    try {
      await cleanups.pop()();
    } catch (e) {
      console.error("cleanup:", e.message);
    }
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A loopback port free for TCP and UDP. */
export async function freePort() {
  for (;;) {
    const port = await new Promise((res, rej) => {
      const s = net.createServer();
      s.once("error", rej);
      s.listen(0, "127.0.0.1", () => {
        const p = s.address().port;
        s.close(() => res(p));
      });
    });
    const udpFree = await new Promise((res) => {
      import("node:dgram").then(({ default: dgram }) => {
        const u = dgram.createSocket("udp4");
        u.once("error", () => res(false));
        u.bind(port, "127.0.0.1", () => u.close(() => res(true)));
      });
    });
    if (udpFree) return port;
  }
}

/** A temporary directory, removed by `stopAll()` unless ATP_KEEP_TMP is set (logs for debugging). */
export function tmpdir(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `atp-worker-${name}-`));
  if (!process.env.ATP_KEEP_TMP) cleanups.unshift(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function waitFor(what, check, timeoutMs = 30000, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}
export { waitFor };

/** Starts `cmd args` in the background with output in `log`; stopped (SIGKILL by PID) at the end. */
export function startProcess(cmd, args, log, opts = {}) {
  const out = fs.openSync(log, "a");
  const child = spawn(cmd, args, { stdio: ["ignore", out, out], ...opts });
  fs.closeSync(out);
  const proc = {
    child,
    log,
    exited: false,
    text: () => (fs.existsSync(log) ? fs.readFileSync(log, "utf8") : ""),
    stop: async () => {
      if (proc.exited) return;
      const done = new Promise((r) => child.once("exit", r));
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {}
      await done;
    },
  };
  child.once("exit", () => (proc.exited = true));
  cleanups.push(proc.stop);
  return proc;
}

// ---- keys and signing ----

/** A fresh Ed25519 key: PKCS#8 PEM, the raw 32-byte seed and public key in base64. */
export function newKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  const pem = privateKey.export({ type: "pkcs8", format: "pem" });
  const der = privateKey.export({ type: "pkcs8", format: "der" });
  const spki = publicKey.export({ type: "spki", format: "der" });
  return {
    privateKey,
    pem,
    seedB64: der.subarray(der.length - 32).toString("base64"),
    publicB64: spki.subarray(spki.length - 32).toString("base64"),
  };
}

/** The reference's canonical form (docs/protocol.md §3) for the plain JSON this suite uses: objects
 * with keys in code-point order, no whitespace, integers and ASCII strings. */
export function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    const keys = Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** Signs `msg` as the server of `domain` does (docs/protocol.md §4). */
export function sign(msg, key, domain, selector = "default") {
  const signable = {};
  for (const k of ["from", "to", "timestamp", "nonce", "type", "payload"]) signable[k] = msg[k];
  if (msg.cc && msg.cc.length) signable.cc = msg.cc;
  if (msg.routing != null) signable.routing = msg.routing;
  const sig = crypto.sign(null, Buffer.from(canonical(signable), "utf8"), key.privateKey).toString("base64");
  return {
    ...msg,
    signature: {
      key_id: `${selector}.atk._atp.${domain}`,
      algorithm: "ed25519",
      signature: sig,
      headers: ["from", "to", "timestamp", "nonce", "type"],
      timestamp: Math.floor(Date.now() / 1000),
    },
  };
}

export const nonce = () => `msg-${crypto.randomBytes(16).toString("hex")}`;
export const now = () => Math.floor(Date.now() / 1000);
export const basic = (id, pw) => `Basic ${Buffer.from(`${id}:${pw}`).toString("base64")}`;

// ---- BIND and the DoH bridge ----

function findNamed() {
  for (const p of ["/usr/sbin/named", "/usr/bin/named"]) if (fs.existsSync(p)) return p;
  throw new Error("BIND's `named` is not installed: apt-get install bind9 (scripts/install-worker-tools.sh)");
}

/** BIND serving `zone` (the text of zone `test`) on 127.0.0.1: DNS on `dnsPort` (UDP+TCP), DoH
 * (HTTP/2 cleartext, as BIND 9.18 speaks it) on `dohPort` at /dns-query. */
export async function startBind(zone) {
  const dir = tmpdir("bind");
  const [dnsPort, dohPort] = [await freePort(), await freePort()];
  fs.writeFileSync(path.join(dir, "test.zone"), zone);
  fs.writeFileSync(
    path.join(dir, "named.conf"),
    `controls { };
http local-doh { endpoints { "/dns-query"; }; };
options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  listen-on port ${dnsPort} { 127.0.0.1; };
  listen-on port ${dohPort} tls none http local-doh { 127.0.0.1; };
  listen-on-v6 { none; };
  http-port ${dohPort};
  recursion no;
  allow-query { any; };
  dnssec-validation no;
};
zone "test" { type primary; file "${dir}/test.zone"; };
`,
  );
  const proc = startProcess(findNamed(), ["-g", "-c", path.join(dir, "named.conf")], path.join(dir, "named.log"));
  await waitFor("named", () => {
    const t = proc.text();
    if (t.includes("exiting (due to fatal error)") || proc.exited) throw new Error(`named failed:\n${t}`);
    // Not "running": named's first line is "running on Linux …", long before the zones load.
    return t.includes("all zones loaded");
  });
  return { proc, dnsPort, dohPort, dir };
}

/** An HTTP/1.1 DoH front for BIND's h2c-only DoH (workerd's fetch speaks HTTP/1.1 to http://).
 * Counts the queries it forwards. */
export async function startDohBridge(bindDohPort) {
  const client = () => http2.connect(`http://127.0.0.1:${bindDohPort}`);
  const bridge = { queries: 0 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      bridge.queries++;
      const body = Buffer.concat(chunks);
      const c = client();
      c.on("error", (e) => {
        res.writeHead(502);
        res.end(String(e));
      });
      const h2 = c.request({
        ":method": req.method,
        ":path": req.url,
        "content-type": "application/dns-message",
        accept: "application/dns-message",
        // BIND refuses a DoH POST without content-length
        ...(req.method === "POST" ? { "content-length": body.length } : {}),
      });
      const out = [];
      let status = 502;
      let ctype = "application/dns-message";
      h2.on("response", (h) => {
        status = h[":status"];
        ctype = h["content-type"] ?? ctype;
      });
      h2.on("data", (d) => out.push(d));
      h2.on("end", () => {
        c.close();
        res.writeHead(status, { "content-type": ctype });
        res.end(Buffer.concat(out));
      });
      h2.on("error", (e) => {
        c.close();
        res.writeHead(502);
        res.end(String(e));
      });
      if (req.method === "POST") h2.end(body);
      else h2.end();
    });
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  bridge.url = `http://127.0.0.1:${port}/dns-query`;
  return bridge;
}

// ---- the native server ----

/** Starts (or restarts, with the same home and port) `atp server start` without TLS. */
export async function startNative({ bin, domain, home, port, dnsPort, adminToken = "admin-native" }) {
  const args = [
    "server", "start", "--domain", domain, "--host", "127.0.0.1", "--port", String(port), "--home", home,
    "--no-tls", "--dns-server", `127.0.0.1:${dnsPort}`, "--no-verify-peers", "--no-local-registry",
    "--admin-token", adminToken, "--retry-base", "1", "--retry-cap", "2",
  ];
  const log = path.join(home, "server.log");
  const before = fs.existsSync(log) ? fs.readFileSync(log, "utf8").length : 0;
  const proc = startProcess(bin, args, log, { env: { ...process.env, ATP_LOG_LEVEL: "info" } });
  await waitFor("atp server start", () => {
    const t = proc.text().slice(before);
    if (proc.exited) throw new Error(`atp exited:\n${t}`);
    return t.includes("Starting ATP Server");
  });
  return { proc, url: (p) => `http://127.0.0.1:${port}/.well-known/atp/v1/${p}`, port, home, domain };
}

// ---- the worker ----

/** The built worker (scripts/build-worker.sh) in workerd, serving HTTPS (self-signed) on a free
 * loopback port. Returns the Miniflare instance and how long it took to answer its first request. */
export async function startWorker({ buildDir, bindings, port }) {
  const t0 = performance.now();
  const mf = new Miniflare({
    modules: true,
    scriptPath: path.join(buildDir, "entry.mjs"),
    modulesRoot: buildDir,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: "2025-09-01",
    // as wrangler.toml: request.signal aborts when the client goes away (streams, long polls)
    compatibilityFlags: ["enable_request_signal"],
    // the domain's Durable Object with SQLite storage, as wrangler.toml declares it
    durableObjects: { STORE: { className: "DomainStore", useSQLite: true } },
    bindings,
    host: "127.0.0.1",
    port,
    https: true,
  });
  cleanups.push(() => mf.dispose());
  const url = await mf.ready;
  const tReady = performance.now();
  const health = await mf.dispatchFetch(`${url}.well-known/atp/v1/health`);
  await health.text();
  const tFirst = performance.now();
  return {
    mf,
    url,
    coldStart: { readyMs: tReady - t0, firstResponseMs: tFirst - tReady, totalMs: tFirst - t0 },
  };
}

/** The same measurement for a trivial JavaScript worker: workerd's own start-up, to tell the
 * relay's share of the cold start from Miniflare's. */
export async function baselineColdStart() {
  const t0 = performance.now();
  const mf = new Miniflare({
    modules: true,
    script: 'export default { fetch() { return new Response("ok"); } };',
    compatibilityDate: "2025-09-01",
    host: "127.0.0.1",
    port: await freePort(),
    https: true,
  });
  try {
    const url = await mf.ready;
    const tReady = performance.now();
    await (await mf.dispatchFetch(url)).text();
    const tFirst = performance.now();
    return { readyMs: tReady - t0, firstResponseMs: tFirst - tReady, totalMs: tFirst - t0 };
  } finally {
    await mf.dispose();
  }
}

/** A request through Miniflare's dispatcher (trusts its self-signed certificate). Returns
 * `{status, json, text}`. */
export async function call(mf, url, { method = "GET", headers = {}, body } = {}) {
  const r = await mf.dispatchFetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, json, text, contentType: r.headers.get("content-type") };
}

/** A request with Node's fetch (for the plain-HTTP native server). */
export async function fetchJson(url, { method = "GET", headers = {}, body } = {}) {
  const r = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, json, text };
}
