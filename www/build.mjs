// Builds the static app into www/dist: src/* as they are, plus the browser entry of the atp-wasm
// package (web.js, error.js, wasm/atp_wasm.js, wasm/atp_wasm_bg.wasm) under dist/atp-wasm/.
// No bundler: the app is plain ES modules. The package is found in (first match):
//   $ATP_WASM_PKG (a package directory, e.g. target/npm/package from scripts/build-npm.sh),
//   www/node_modules/atp-wasm (`npm install --no-save <atp-wasm-x.y.z.tgz>`),
//   ${CARGO_TARGET_DIR:-../target}/npm/package.
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.env.ATP_WWW_OUT || join(here, 'dist'));
const candidates = [
  process.env.ATP_WASM_PKG,
  join(here, 'node_modules', 'atp-wasm'),
  join(resolve(here, '..', process.env.CARGO_TARGET_DIR || 'target'), 'npm', 'package'),
].filter(Boolean);
const pkg = candidates.find((d) => existsSync(join(d, 'web.js')) && existsSync(join(d, 'wasm', 'atp_wasm_bg.wasm')));
if (!pkg) {
  console.error(`www build: the atp-wasm package was not found in:\n  ${candidates.join('\n  ')}\n` +
    'Build it with scripts/build-npm.sh, then `npm install --no-save <its .tgz>` here (or set ATP_WASM_PKG).');
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'atp-wasm', 'wasm'), { recursive: true });
cpSync(join(here, 'src'), out, { recursive: true });
for (const f of ['web.js', 'error.js', 'wasm/atp_wasm.js', 'wasm/atp_wasm_bg.wasm']) {
  cpSync(join(pkg, f), join(out, 'atp-wasm', f));
}
const files = [];
const walk = (d) => readdirSync(d).forEach((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : files.push(join(d, f))));
walk(out);
const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
writeFileSync(join(out, 'build.json'), JSON.stringify({ built: new Date().toISOString(), atpWasm: pkg }) + '\n');
console.log(`www build: ${files.length} files, ${bytes} bytes in ${out} (atp-wasm from ${pkg})`);
