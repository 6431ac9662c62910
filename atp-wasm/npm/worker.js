// atp-wasm for Cloudflare Workers (workerd): wrangler and esbuild import .wasm files as a compiled
// WebAssembly.Module, which initialises the module synchronously at import.
import wasmModule from './wasm/atp_wasm_bg.wasm';
import { initSync } from './wasm/atp_wasm.js';

initSync({ module: wasmModule });

export * from './wasm/atp_wasm.js';
export { AtpError } from './error.js';
/** Already initialised; exists for parity with the browser build. */
export default async function init() {}
