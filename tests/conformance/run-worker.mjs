// Launches atp-worker in workerd through Miniflare and runs the atp-conformance kit against it
// (tests/conformance/run-worker.sh builds what it needs first).
//
// * BIND serves zone `test` with the kit's foreign ATS/ATK records (`atp-conformance records
//   --format zone`); the worker reads them by DNS over HTTPS through the harness's HTTP/1.1 -> h2c
//   bridge, exactly as tests/worker does.
// * The worker is served over HTTPS by Miniflare (`https: true`, self-signed); Miniflare sets
//   `CF-Connecting-IP` from the TCP peer as Cloudflare's edge does, which is the worker's ATS source.
// * The kit runs with `--target worker`: TLS is terminated by the platform (Miniflare here,
//   Cloudflare's edge in production), so the `tls.*` cases are reported N/A.
//
// Env: ATP_CONFORMANCE_BIN (the kit binary, required), ATP_WORKER_BUILD (default atp-worker/build).
// Extra arguments are passed to `atp-conformance run`. Exit code: the kit's.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import * as h from "../worker/harness.mjs";

const KIT = process.env.ATP_CONFORMANCE_BIN;
const BUILD = process.env.ATP_WORKER_BUILD ?? path.join(h.WORKER_DIR, "build");
const DOMAIN = "relay.test";
const ADMIN = "conformance-admin";

for (const f of [KIT, path.join(BUILD, "entry.mjs")]) {
  if (!f || !fs.existsSync(f)) {
    console.error(`missing ${f ?? "ATP_CONFORMANCE_BIN"} (tests/conformance/run-worker.sh builds it)`);
    process.exit(2);
  }
}

let code = 1;
try {
  const records = execFileSync(KIT, ["records", "--format", "zone"], { encoding: "utf8" });
  const zone = `$TTL 300
@ IN SOA ns1.test. hostmaster.test. ( 1 3600 600 86400 60 )
@ IN NS ns1.test.
ns1 IN A 127.0.0.1
${records}`;
  const bind = await h.startBind(zone);
  const bridge = await h.startDohBridge(bind.dohPort);
  const worker = await h.startWorker({
    buildDir: BUILD,
    port: await h.freePort(),
    bindings: {
      DOMAIN,
      DOMAIN_KEY: h.newKey().seedB64,
      ADMIN_TOKEN: ADMIN,
      DOH_URL: bridge.url,
      // small argon2 cost: the kit checks the protocol, not password hashing
      ARGON2_MEMORY_KIB: "1024",
      ARGON2_ITERATIONS: "1",
    },
  });
  const url = worker.url.toString().replace(/\/$/, "");
  console.log(`atp-worker in Miniflare at ${url} (cold start ${worker.coldStart.totalMs.toFixed(0)} ms)`);
  const t0 = performance.now();
  const kit = spawn(
    KIT,
    ["run", "--url", url, "--domain", DOMAIN, "--admin-token", ADMIN, "--target", "worker", ...process.argv.slice(2)],
    { stdio: "inherit" },
  );
  code = await new Promise((resolve) => kit.once("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0))));
  console.log(`worker run: ${((performance.now() - t0) / 1000).toFixed(1)} s (kit only, worker start excluded)`);
} catch (e) {
  console.error("run-worker:", e);
  code = 2;
} finally {
  await h.stopAll();
}
process.exit(code);
