// Types of the atp-wasm package: the generated declarations of the WebAssembly bindings (with the
// Rust doc comments), plus AtpError.
export * from './wasm/atp_wasm.js';
export { default } from './wasm/atp_wasm.js';
import type { AtpErrorKind } from './wasm/atp_wasm.js';

/**
 * What AtpClient, resolveAtp, dohQuery, evaluateAts and verifyMessage throw or reject with: an
 * `Error` named `AtpError`. `instanceof AtpError` recognises it.
 *
 * ```ts
 * try {
 *   await client.send("bob", { body: "hi" });
 * } catch (e) {
 *   if (e instanceof AtpError && e.status === 401) console.error("wrong password:", e.code, e.message);
 * }
 * ```
 */
export declare class AtpError extends Error {
  constructor(message: string, fields?: { kind?: AtpErrorKind; status?: number; code?: string | null; body?: unknown });
  readonly name: 'AtpError';
  /** What went wrong, beyond the HTTP status (see `AtpErrorKind`). */
  kind: AtpErrorKind;
  /** The HTTP status of the server's answer (403/451 for a signature refused over DNS); 0 when there was none. */
  status: number;
  /** The server's `error_code` (e.g. `"535 5.7.8"`, `"550 5.7.28"`), or `null`. */
  code: string | null;
  /** The server's JSON error object, or `null`. */
  body: unknown;
}
