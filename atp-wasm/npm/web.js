// atp-wasm for browsers and bundlers: the wasm-bindgen `web` glue. Call the default export once
// before anything else (`await init()`): it fetches wasm/atp_wasm_bg.wasm next to this file
// (bundlers resolve `new URL(…, import.meta.url)`), or takes `{ module_or_path }`.
export * from './wasm/atp_wasm.js';
export { default } from './wasm/atp_wasm.js';
export { AtpError } from './error.js';
