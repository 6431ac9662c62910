// atp-wasm for Node's import (and Deno): the web glue, initialised synchronously from this
// package's .wasm file, so everything is usable right after the import.
import { readFileSync } from 'node:fs';
import { initSync } from './wasm/atp_wasm.js';

initSync({ module: readFileSync(new URL('./wasm/atp_wasm_bg.wasm', import.meta.url)) });

export * from './wasm/atp_wasm.js';
export { AtpError } from './error.js';
/** Already initialised; exists for parity with the browser build. */
export default async function init() {}
