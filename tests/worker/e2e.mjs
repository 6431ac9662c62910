// End-to-end suite of atp-worker: the built worker in workerd (Miniflare, the domain's Durable
// Object with SQLite storage, cron) exchanges mail with a native `atp` server on loopback; both discover each other through
// BIND (the worker by DNS over HTTPS via an HTTP/1.1 -> h2c bridge, the native server with
// --dns-server). See tests/worker/run.sh.
//
// Env: ATP_BIN (the native binary), ATP_WORKER_BUILD (the worker build dir).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import * as h from "./harness.mjs";

const ATP_BIN = process.env.ATP_BIN ?? path.join(h.ROOT, "target/debug/atp");
const BUILD = process.env.ATP_WORKER_BUILD ?? path.join(h.WORKER_DIR, "build");
const RELAY = "relay.test";
const NATIVE = "native.test";
const ADMIN = "admin-relay";
const API = ".well-known/atp/v1";

const results = [];
let failed = false;
async function step(name, fn) {
  if (failed) {
    results.push(`skipped  ${name}`);
    return;
  }
  const t0 = performance.now();
  try {
    await fn();
    results.push(`ok       ${name} (${Math.round(performance.now() - t0)} ms)`);
    console.log(`ok: ${name}`);
  } catch (e) {
    failed = true;
    results.push(`FAILED   ${name}: ${e.message}`);
    console.error(`FAILED: ${name}\n`, e);
  }
}

for (const f of [ATP_BIN, path.join(BUILD, "entry.mjs")]) {
  if (!fs.existsSync(f)) {
    console.error(`missing ${f} (tests/worker/run.sh builds it)`);
    process.exit(2);
  }
}

const nativeKey = h.newKey();
const relayKey = h.newKey();
const otherKey = h.newKey();
const nativePort = await h.freePort();
const workerPort = await h.freePort();
const nativeHome = h.tmpdir("native");
fs.mkdirSync(path.join(nativeHome, "keys"), { recursive: true });
fs.writeFileSync(path.join(nativeHome, "keys", "default.key"), nativeKey.pem, { mode: 0o600 });

const zone = `$TTL 300
@ IN SOA ns1.test. hostmaster.test. ( 1 3600 600 86400 60 )
@ IN NS ns1.test.
ns1 IN A 127.0.0.1
_atp.native IN SVCB 1 127.0.0.1. port=${nativePort} alpn=atp/1
ats._atp.native IN TXT "v=atp1 allow=ip:127.0.0.1 deny=all"
default.atk._atp.native IN TXT "v=atp1 k=ed25519 p=${nativeKey.publicB64}"
_atp.relay IN SVCB 1 127.0.0.1. port=${workerPort} alpn=atp/1
ats._atp.relay IN TXT "v=atp1 allow=ip:127.0.0.1 deny=all"
default.atk._atp.relay IN TXT "v=atp1 k=ed25519 p=${relayKey.publicB64}"
`;

let native, worker, mf, base, bridge;
const wurl = (p) => `${base}${API}/${p}`;
const alice = { id: `alice@${RELAY}`, pw: "alice-pw" };
const bob = { id: `bob@${NATIVE}`, pw: "bob-pw" };
const adminH = { authorization: `Bearer ${ADMIN}` };

function message(from, to, payload, extra = {}) {
  return { from, to, timestamp: h.now(), nonce: h.nonce(), type: "message", payload, ...extra };
}
const submitToWorker = (msg, who = alice) =>
  h.call(mf, wurl("message"), {
    method: "POST",
    headers: { authorization: h.basic(who.id, who.pw), "content-type": "application/atp+json" },
    body: msg,
  });
const transferToWorker = (msg, headers = {}) =>
  h.call(mf, wurl("message"), { method: "POST", headers: { "content-type": "application/atp+json", ...headers }, body: msg });
const inspect = (n) => h.call(mf, wurl(`inspect?nonce=${encodeURIComponent(n)}`), { headers: adminH });
const workerRecv = (query = "") =>
  h.call(mf, wurl(`messages${query}`), { headers: { authorization: h.basic(alice.id, alice.pw) } });
const nativeRecv = (query = "") =>
  h.fetchJson(native.url(`messages${query}`), { headers: { authorization: h.basic(bob.id, bob.pw) } });

async function waitForNonce(recv, n, what) {
  return h.waitFor(
    what,
    async () => {
      const r = await recv();
      return r.json?.messages?.find((m) => m.nonce === n);
    },
    30000,
    200,
  );
}

async function waitForStatus(n, status) {
  return h.waitFor(`${n} ${status}`, async () => {
    const r = await inspect(n);
    return r.json?.status === status ? r.json : null;
  }, 30000, 100);
}

/** Outbound messages not settled yet (the domain object's queue, from `stats`). */
async function waiting() {
  const q = (await h.call(mf, wurl("stats"), { headers: adminH })).json.queue;
  return q.queued + q.delivering + q.failed;
}

function expectRefusal(r, status, code) {
  assert.equal(r.status, status, `status of ${r.text}`);
  assert.match(r.contentType ?? "application/json", /^application\/json/);
  assert.equal(r.json?.error_code, code, `error_code of ${r.text}`);
  assert.equal(typeof r.json.error, "string");
}

const report = {};
try {
  await step("start BIND, the DoH bridge and the native server", async () => {
    const bind = await h.startBind(zone);
    bridge = await h.startDohBridge(bind.dohPort);
    native = await h.startNative({ bin: ATP_BIN, domain: NATIVE, home: nativeHome, port: nativePort, dnsPort: bind.dnsPort });
    native.dnsPort = bind.dnsPort;
  });

  await step("start the worker in workerd (cold start)", async () => {
    worker = await h.startWorker({
      buildDir: BUILD,
      port: workerPort,
      bindings: {
        DOMAIN: RELAY,
        DOMAIN_KEY: relayKey.seedB64,
        ADMIN_TOKEN: ADMIN,
        DOH_URL: bridge.url,
        // tests only: the native peer serves plain HTTP on loopback
        OUTBOUND_SCHEME: "http",
        RETRY_BASE: "1",
        RETRY_CAP: "2",
        // small argon2 cost: the suite measures the relay, not password hashing
        ARGON2_MEMORY_KIB: "1024",
        ARGON2_ITERATIONS: "1",
      },
    });
    mf = worker.mf;
    base = worker.url.toString();
    assert.ok(base.startsWith("https://127.0.0.1:"), base);
    report.coldStart = worker.coldStart;
    const health = await h.call(mf, wurl("health"));
    assert.equal(health.status, 200);
    assert.deepEqual({ status: health.json.status, domain: health.json.domain }, { status: "healthy", domain: RELAY });
    const caps = await h.call(mf, wurl("capabilities"));
    assert.deepEqual(caps.json.protocols, ["atp/1"]);
    assert.equal(caps.json.max_payload_size, 1048576);
  });

  await step("agents register on both servers", async () => {
    let r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "alice", password: alice.pw } });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.json, { status: "registered", agent_id: alice.id });
    r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "alice", password: "x" } });
    expectRefusal(r, 409, "550 5.1.6");
    r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "postmaster", password: "x" } });
    expectRefusal(r, 403, "550 5.7.0");
    r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: `zed@${NATIVE}`, password: "x" } });
    expectRefusal(r, 403, "550 5.7.0");
    r = await h.call(mf, wurl("register"), { method: "POST", body: "{" });
    expectRefusal(r, 400, "500 5.5.2");
    r = await h.fetchJson(native.url("register"), { method: "POST", body: { agent_id: "bob", password: bob.pw } });
    assert.equal(r.status, 201, r.text);
    r = await h.call(mf, wurl("agents"), { headers: adminH });
    assert.deepEqual(r.json, { agents: [alice.id] });
  });

  await step("worker agent -> native server: delivered at once (DoH discovery, signed transfer)", async () => {
    const msg = message(alice.id, bob.id, { subject: "hi", body: "from the edge" });
    const r = await submitToWorker(msg);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.status, "accepted");
    assert.equal(r.json.nonce, msg.nonce);
    const got = await waitForNonce(nativeRecv, msg.nonce, "bob's inbox on the native server");
    assert.deepEqual(got.payload, msg.payload);
    assert.equal(got.from, alice.id);
    assert.equal(got.signature.key_id, `default.atk._atp.${RELAY}`);
    const rec = await waitForStatus(msg.nonce, "delivered");
    assert.equal(rec.attempts, 1);
    assert.equal(await waiting(), 0, "queue empty");
  });

  await step("DoH answers are cached for their TTL (no new queries for a second delivery)", async () => {
    const before = bridge.queries;
    const msg = message(alice.id, bob.id, { body: "second" });
    assert.equal((await submitToWorker(msg)).status, 202);
    await waitForNonce(nativeRecv, msg.nonce, "second message at bob");
    assert.equal(bridge.queries, before, "DoH queries after a cached discovery");
    const stats = await h.call(mf, wurl("stats"), { headers: adminH });
    assert.ok(stats.json.dns_cache.hits > 0, JSON.stringify(stats.json.dns_cache));
    report.dohQueries = bridge.queries;
  });

  await step("native server -> worker agent: recv returns it, with the cursor semantics", async () => {
    const msg = message(bob.id, alice.id, { subject: "re", body: "from the native server" });
    const r = await h.fetchJson(native.url("message"), {
      method: "POST",
      headers: { authorization: h.basic(bob.id, bob.pw), "content-type": "application/atp+json" },
      body: msg,
    });
    assert.equal(r.status, 202, r.text);
    const got = await waitForNonce(() => workerRecv(), msg.nonce, "alice's inbox on the worker");
    assert.deepEqual(got.payload, msg.payload);
    assert.equal(got.signature.key_id, `default.atk._atp.${NATIVE}`, "stored with the sender's signature");
    // a second one, then the cursor
    const msg2 = message(bob.id, alice.id, { body: "two" });
    await h.fetchJson(native.url("message"), {
      method: "POST",
      headers: { authorization: h.basic(bob.id, bob.pw) },
      body: msg2,
    });
    await waitForNonce(() => workerRecv(), msg2.nonce, "second message at alice");
    const all = await workerRecv();
    assert.equal(all.json.count, 2);
    assert.deepEqual(all.json.messages.map((m) => m.nonce), [msg.nonce, msg2.nonce]);
    const first = await workerRecv("?limit=1");
    assert.equal(first.json.count, 1);
    assert.equal(first.json.messages[0].nonce, msg.nonce);
    const next = await workerRecv(`?limit=1&after_id=${first.json.last_id}`);
    assert.equal(next.json.messages[0].nonce, msg2.nonce);
    assert.ok(next.json.last_id > first.json.last_id);
    const none = await workerRecv(`?after_id=${next.json.last_id}`);
    assert.deepEqual(none.json, { messages: [], count: 0 });
    assert.equal(all.json.last_id, next.json.last_id);
    expectRefusal(await workerRecv("?limit=-1"), 400, "500 5.5.2");
    const wrong = await h.call(mf, wurl("messages"), { headers: { authorization: h.basic(alice.id, "wrong") } });
    expectRefusal(wrong, 401, "535 5.7.8");
    expectRefusal(await h.call(mf, wurl("messages")), 401, "535 5.7.8");
  });

  await step("peer down: messages wait in the queue; once the peer is back one cron tick drains it", async () => {
    await native.proc.stop();
    const msg = message(alice.id, bob.id, { body: "while you were away" });
    const r = await submitToWorker(msg);
    assert.equal(r.status, 202, r.text);
    const rec = await waitForStatus(msg.nonce, "failed");
    assert.equal(rec.attempts, 1);
    assert.match(rec.last_error, /^451 4\.4\.1: /);
    assert.equal(await waiting(), 1);
    // a sweep while the peer is still down: another failure, still queued
    await h.sleep(Math.max(0, rec.next_attempt_at * 1000 - Date.now()) + 1100);
    const worker0 = await mf.getWorker();
    await worker0.scheduled({ cron: "*/1 * * * *" });
    const rec2 = await inspect(msg.nonce);
    assert.equal(rec2.json.status, "failed");
    assert.equal(rec2.json.attempts, 2);
    // more mail for the peer meanwhile: it waits behind the domain's backoff
    const more = [];
    for (let i = 0; i < 4; i++) {
      const m = message(alice.id, bob.id, { body: `queued ${i}` });
      assert.equal((await submitToWorker(m)).status, 202);
      more.push(m);
    }
    await h.waitFor("all five waiting", async () => (await waiting()) === 5, 30000, 100);
    // the peer returns; one cron tick delivers everything waiting for it
    native = await h.startNative({ bin: ATP_BIN, domain: NATIVE, home: nativeHome, port: nativePort, dnsPort: native.dnsPort });
    await h.sleep(Math.max(0, rec2.json.next_attempt_at * 1000 - Date.now()) + 1100);
    const sweep = await (await mf.getWorker()).scheduled({ cron: "*/1 * * * *" });
    assert.equal(sweep.outcome, "ok");
    for (const m of [msg, ...more]) assert.equal((await inspect(m.nonce)).json.status, "delivered", m.nonce);
    assert.equal(await waiting(), 0, "queue empty after one tick");
    for (const m of [msg, ...more]) await waitForNonce(nativeRecv, m.nonce, "bob's inbox after the sweep");
  });

  await step("20 concurrent registrations of one name: exactly one succeeds, the others 409", async () => {
    const tries = Array.from({ length: 20 }, (_, i) =>
      h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "racer", password: `pw-${i}` } }),
    );
    const answers = await Promise.all(tries);
    const won = answers.flatMap((r, i) => (r.status === 201 ? [i] : []));
    assert.equal(won.length, 1, answers.map((r) => r.status).join(","));
    for (const r of answers) if (r.status !== 201) expectRefusal(r, 409, "550 5.1.6");
    const who = (pw) => h.call(mf, wurl("whoami"), { headers: { authorization: h.basic(`racer@${RELAY}`, pw) } });
    assert.equal((await who(`pw-${won[0]}`)).status, 200, "the winner's password");
    expectRefusal(await who(`pw-${(won[0] + 1) % 20}`), 401, "535 5.7.8");
  });

  await step("500 messages from 10 concurrent senders (local and remote), read while arriving: each exactly once", async () => {
    const reader = { id: `reader@${RELAY}`, pw: "reader-pw" };
    assert.equal((await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "reader", password: reader.pw } })).status, 201);
    const locals = [];
    for (let i = 0; i < 5; i++) {
      const a = { id: `sender${i}@${RELAY}`, pw: `sender-pw-${i}` };
      const r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: `sender${i}`, password: a.pw } });
      assert.equal(r.status, 201, r.text);
      locals.push(a);
    }
    const before = (await h.call(mf, wurl("stats"), { headers: adminH })).json.messages.delivered_local;
    const PER_SENDER = 50;
    const sent = new Set();
    let retried = 0;
    // A refusal that says "retry" is retried with the same message: the dedup row makes it once.
    async function deliver(send) {
      for (let attempt = 0; ; attempt++) {
        const r = await send();
        if (r.status === 202) return;
        assert.ok(r.status === 503 && attempt < 5, `status ${r.status}: ${r.text}`);
        retried++;
      }
    }
    const senders = [
      ...locals.map((a) => async () => {
        for (let i = 0; i < PER_SENDER; i++) {
          const m = message(a.id, reader.id, { body: `${a.id} ${i}` });
          sent.add(m.nonce);
          await deliver(() => submitToWorker(m, a));
        }
      }),
      ...Array.from({ length: 5 }, (_, k) => async () => {
        for (let i = 0; i < PER_SENDER; i++) {
          const m = h.sign(message(`remote${k}@${NATIVE}`, reader.id, { body: `remote ${k} ${i}` }), nativeKey, NATIVE);
          sent.add(m.nonce);
          await deliver(() => transferToWorker(m));
        }
      }),
    ];
    const got = [];
    let cursor = 0;
    let lastId = 0;
    let pages = 0;
    const readPage = async () => {
      const r = await h.call(mf, wurl(`messages?after_id=${cursor}&limit=37`), {
        headers: { authorization: h.basic(reader.id, reader.pw) },
      });
      assert.equal(r.status, 200, r.text);
      pages++;
      for (const m of r.json.messages) got.push(m.nonce);
      if (r.json.count > 0) {
        assert.ok(r.json.last_id > lastId, `ids increase: ${r.json.last_id} after ${lastId}`);
        lastId = cursor = r.json.last_id;
      }
      return r.json.count;
    };
    const t0 = performance.now();
    let done = false;
    const sending = Promise.all(senders.map((s) => s())).finally(() => (done = true));
    while (!done) {
      await readPage();
      await h.sleep(20);
    }
    await sending;
    const seconds = (performance.now() - t0) / 1000;
    while ((await readPage()) > 0);
    assert.equal(new Set(got).size, got.length, "no message twice");
    assert.equal(got.length, 10 * PER_SENDER, "every message");
    for (const n of got) assert.ok(sent.has(n), `unknown ${n}`);
    const after = (await h.call(mf, wurl("stats"), { headers: adminH })).json.messages.delivered_local;
    assert.equal(after - before, 10 * PER_SENDER, "global counters count each message once");
    report.concurrent = { messages: got.length, seconds, pages, retried };
  });

  await step("a domain without ATP records: bounce notice in the sender's inbox", async () => {
    const msg = message(alice.id, "someone@nowhere.test", { body: "into the void" });
    assert.equal((await submitToWorker(msg)).status, 202);
    const rec = await waitForStatus(msg.nonce, "bounced");
    assert.match(rec.error, /^550 5\.1\.2: /);
    const notice = await h.waitFor("bounce notice", async () => {
      const r = await workerRecv();
      return r.json.messages.find((m) => m.payload?.original_nonce === msg.nonce);
    });
    assert.equal(notice.from, `postmaster@${RELAY}`);
    assert.equal(notice.payload.subject, `Delivery Failure: ${msg.nonce}`);
    assert.equal(notice.payload.error_code, "550 5.1.2");
    assert.equal(notice.payload.status, null);
    assert.match(notice.payload.body, /could not be delivered/);
  });

  await step("remote transfers: signed ok; tampered, unsigned, wrong key, ATS fail, relay, unknown agent refused", async () => {
    const carol = `carol@${NATIVE}`;
    const signed = h.sign(message(carol, alice.id, { body: "signed by the test" }), nativeKey, NATIVE);
    let r = await transferToWorker(signed);
    assert.equal(r.status, 202, r.text);
    assert.equal((await transferToWorker(signed)).status, 202, "an exact repeat is accepted again (idempotent)");
    const replay = h.sign({ ...signed, payload: { body: "other content, same nonce" } }, nativeKey, NATIVE);
    expectRefusal(await transferToWorker(replay), 400, "550 5.7.30");

    const tampered = { ...h.sign(message(carol, alice.id, { body: "original" }), nativeKey, NATIVE), payload: { body: "tampered" } };
    r = await transferToWorker(tampered);
    expectRefusal(r, 403, "550 5.7.28");
    assert.equal(r.json.error, "ATK verification failed");

    r = await transferToWorker(message(carol, alice.id, { body: "unsigned" }));
    expectRefusal(r, 403, "550 5.7.28");
    assert.match(r.json.error_message, /no signature/);

    expectRefusal(await transferToWorker(h.sign(message(carol, alice.id, {}), otherKey, NATIVE)), 403, "550 5.7.28");
    const foreignKeyId = h.sign(message(carol, alice.id, {}), relayKey, RELAY);
    r = await transferToWorker(foreignKeyId);
    expectRefusal(r, 403, "550 5.7.28");
    assert.match(r.json.error_message, /mismatch/);

    r = await transferToWorker(h.sign(message(carol, alice.id, {}), nativeKey, NATIVE), { "cf-connecting-ip": "10.1.2.3" });
    expectRefusal(r, 403, "550 5.7.26");
    assert.equal(r.json.matched_directive, "deny=all");

    expectRefusal(await transferToWorker(h.sign(message(carol, "zed@elsewhere.test", {}), nativeKey, NATIVE)), 403, "550 5.7.1");
    expectRefusal(await transferToWorker(h.sign(message(carol, `nobody@${RELAY}`, {}), nativeKey, NATIVE)), 404, "550 5.1.1");
    const old = h.sign({ ...message(carol, alice.id, {}), timestamp: h.now() - 6 * 86400 }, nativeKey, NATIVE);
    expectRefusal(await transferToWorker(old), 400, "550 5.7.31");
    const unknownDomain = h.sign(message("x@unknown.test", alice.id, {}), otherKey, "unknown.test");
    expectRefusal(await transferToWorker(unknownDomain), 403, "550 5.7.29");
    // a local sender must authenticate
    expectRefusal(await transferToWorker(message(alice.id, bob.id, {})), 401, "535 5.7.8");
    expectRefusal(await transferToWorker("{"), 400, "550 5.6.0");
  });

  await step("argon2id at the default cost (19456 KiB, t=2) in workerd", async () => {
    report.baseline = await h.baselineColdStart();
    const w2 = await h.startWorker({
      buildDir: BUILD,
      port: await h.freePort(),
      bindings: { DOMAIN: "cost.test", DOMAIN_KEY: relayKey.seedB64, DOH_URL: bridge.url },
    });
    const u = (p) => `${w2.url}${API}/${p}`;
    let t = performance.now();
    const r = await h.call(w2.mf, u("register"), { method: "POST", body: { agent_id: "amy", password: "pw" } });
    report.argon2HashMs = performance.now() - t;
    assert.equal(r.status, 201, r.text);
    const auth = { authorization: h.basic("amy@cost.test", "pw") };
    t = performance.now();
    assert.equal((await h.call(w2.mf, u("messages"), { headers: auth })).status, 200);
    report.argon2VerifyMs = performance.now() - t;
    t = performance.now();
    assert.equal((await h.call(w2.mf, u("messages"), { headers: auth })).status, 200);
    report.cachedAuthMs = performance.now() - t;
  });

  await step("admin routes, whoami and metrics (the core's routes), errors as JSON", async () => {
    expectRefusal(await h.call(mf, wurl("stats")), 401, "535 5.7.8");
    expectRefusal(await h.call(mf, wurl("stats"), { headers: { authorization: "Bearer nope" } }), 403, "550 5.7.0");
    const stats = await h.call(mf, wurl("stats"), { headers: adminH });
    assert.equal(stats.status, 200);
    assert.equal(stats.json.domain, RELAY);
    assert.ok(stats.json.messages.forwarded >= 3, JSON.stringify(stats.json.messages));
    assert.ok(stats.json.security.atk_fail >= 3);
    assert.equal(stats.json.queue.queued, 0);
    assert.ok(stats.json.rejections["550 5.7.28"] >= 1, JSON.stringify(stats.json.rejections));
    const metrics = await h.call(mf, wurl("metrics"), { headers: adminH });
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /^atp_messages_forwarded_total [3-9]\d*$/m);
    assert.match(metrics.text, /^atp_agents [1-9]\d*$/m);
    expectRefusal(await h.call(mf, wurl("metrics")), 401, "535 5.7.8");
    const me = await h.call(mf, wurl("whoami"), { headers: { authorization: h.basic(alice.id, alice.pw) } });
    assert.deepEqual([me.status, me.json?.agent_id], [200, alice.id]);
    expectRefusal(await h.call(mf, wurl("inspect?nonce=msg-nope"), { headers: adminH }), 404, "550 5.1.0");
    expectRefusal(await h.call(mf, wurl("inspect"), { headers: adminH }), 400, "500 5.5.2");
    expectRefusal(await h.call(mf, wurl("nothing")), 404, "550 5.1.0");
    expectRefusal(await h.call(mf, wurl("message")), 405, "500 5.5.2");
    const big = "x".repeat(1048577);
    expectRefusal(await h.call(mf, wurl("message"), { method: "POST", body: big }), 400, "552 5.3.4");
  });

  await step("inbox streams from the domain object: a live event; 8 per agent; a client that goes away frees its place", async () => {
    const carol = { id: `carol@${RELAY}`, pw: "carol-pw" };
    let r = await h.call(mf, wurl("register"), { method: "POST", body: { agent_id: "carol", password: carol.pw } });
    assert.equal(r.status, 201, r.text);
    const auth = { authorization: h.basic(carol.id, carol.pw) };
    const decoder = new TextDecoder();
    // Opens a stream (or a long poll) that the test can abort like a client going away.
    const open = async (what = "messages/stream") => {
      const ctl = new AbortController();
      const resp = await mf.dispatchFetch(wurl(what), { headers: auth, signal: ctl.signal });
      return { ctl, resp, reader: null, buf: "" };
    };
    const nextChunk = async (s, want) => {
      const deadline = Date.now() + 30000;
      while (!s.buf.includes(want)) {
        assert.ok(Date.now() < deadline, `no ${want} within 30 s: ${s.buf}`);
        s.reader ??= s.resp.body.getReader();
        const { value, done } = await s.reader.read();
        assert.ok(!done, `the stream ended before ${want}: ${s.buf}`);
        s.buf += decoder.decode(value);
      }
      return s.buf;
    };
    const close = (s) => {
      s.ctl.abort();
      (s.reader ?? s.resp.body)?.cancel().catch(() => {});
    };
    // Live: a stream with an empty inbox gets a message as soon as it is committed.
    const live = await open();
    assert.equal(live.resp.status, 200);
    assert.match(live.resp.headers.get("content-type"), /^text\/event-stream/);
    await nextChunk(live, ": atp inbox stream");
    const m = message(alice.id, carol.id, "live");
    assert.equal((await submitToWorker(m)).status, 202);
    const got = await nextChunk(live, m.nonce);
    assert.match(got, /^id: \d+\nevent: message\ndata: \{/m);
    // 8 streams per agent (the relay's limit): the ninth is refused.
    const streams = [live];
    for (let i = 1; i < 8; i++) {
      const s = await open();
      assert.equal(s.resp.status, 200);
      await nextChunk(s, ": atp inbox stream");
      streams.push(s);
    }
    // A stream's status (an opened one closed at once), or the refusal.
    const tryStream = async () => {
      const s = await open();
      if (s.resp.status === 200) {
        close(s);
        return { status: 200 };
      }
      const text = await s.resp.text();
      return { status: s.resp.status, text, json: JSON.parse(text), contentType: s.resp.headers.get("content-type") };
    };
    expectRefusal(await tryStream(), 429, "452 4.3.1");
    // Clients going away give their places back: workerd aborts request.signal once a write to
    // the client failed, at the latest at the heartbeat (15 s; atp-worker/src/cf.rs).
    const reopens = async () => ((await tryStream()).status === 200 ? true : null);
    const t0 = Date.now();
    streams.forEach(close);
    await h.waitFor("a stream place freed by the clients going away", reopens, 25000, 100);
    report.streamFreedMs = Date.now() - t0;
  });
} finally {
  await h.stopAll();
}

console.log("\n== atp-worker suite");
for (const line of results) console.log(`   ${line}`);
if (report.coldStart) {
  const c = report.coldStart;
  console.log(
    `   cold start in Miniflare: ready ${c.readyMs.toFixed(0)} ms, first response ${c.firstResponseMs.toFixed(0)} ms ` +
      `(total ${c.totalMs.toFixed(0)} ms)`,
  );
}
if (report.baseline) {
  const b = report.baseline;
  console.log(`   (a trivial JS worker: ready ${b.readyMs.toFixed(0)} ms, first response ${b.firstResponseMs.toFixed(0)} ms)`);
}
if (report.concurrent) {
  const c = report.concurrent;
  console.log(
    `   10 concurrent senders: ${c.messages} messages in ${c.seconds.toFixed(1)} s ` +
      `(${(c.messages / c.seconds).toFixed(0)} msg/s), read in ${c.pages} pages meanwhile, ${c.retried} retried 503s`,
  );
}
if (report.argon2HashMs) {
  console.log(
    `   argon2id default cost in workerd: register ${report.argon2HashMs.toFixed(0)} ms, first recv (verify) ` +
      `${report.argon2VerifyMs.toFixed(0)} ms, cached credential ${report.cachedAuthMs.toFixed(0)} ms`,
  );
}
if (report.streamFreedMs !== undefined) {
  console.log(
    `   stream places given back ${report.streamFreedMs} ms after 8 streams' clients went away (at the next heartbeat)`,
  );
}
const wasm = path.join(BUILD, "atp_worker_bg.wasm");
if (fs.existsSync(wasm)) {
  const { gzipSync } = await import("node:zlib");
  const bytes = fs.readFileSync(wasm);
  console.log(`   worker wasm: ${bytes.length} bytes, ${gzipSync(bytes, { level: 9 }).length} bytes gzipped`);
}
if (failed) {
  console.log("== FAILED");
  process.exit(1);
}
console.log("== all worker tests passed");
