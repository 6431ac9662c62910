// The package's Workers entry (worker.js) in workerd through Miniflare, against a real atp-native
// server: the wasm loads as a compiled module and fetch() reaches the server. run.sh installs
// miniflare for it (~165 MB with workerd); ATP_NPM_WORKERD=0 skips it.
import { Miniflare } from 'miniflare';
import { checkCount, eq, startServer } from './lib.mjs';

const server = await startServer('worker.test');
const mf = new Miniflare({
  modules: true,
  scriptPath: 'workerd-worker.js',
  modulesRoot: '.',
  modulesRules: [
    { type: 'ESModule', include: ['**/*.js'] },
    { type: 'CompiledWasm', include: ['**/*.wasm'] },
  ],
  compatibilityDate: '2025-09-01',
});
try {
  const r = await mf.dispatchFetch(`http://worker.test/?server=${encodeURIComponent(server.url)}`);
  const text = await r.text();
  eq(r.status, 200, `the worker answered: ${text}`);
  const out = JSON.parse(text);
  eq(out.canonical, '{"a":[1],"b":1e-05}', 'canonical form in workerd');
  eq(out.verified, true, 'sign and verify in workerd');
  eq([out.domain, out.sent, out.received], ['worker.test', 'accepted', ['from a worker']], 'AtpClient in workerd');
  eq(out.error, [true, 'http', 404, '550 5.1.1'], 'AtpError in workerd');
} finally {
  await mf.dispose();
  server.stop();
}
console.log(`workerd.mjs: ${checkCount()} checks passed`);
