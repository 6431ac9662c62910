// atp-wasm for Node's require(): the wasm-bindgen `nodejs` glue, which loads the module
// synchronously from this package's directory.
'use strict';

/** Errors thrown by AtpClient, the DNS functions and verifyMessage are Errors named `AtpError`. */
class AtpError extends Error {
  constructor(message, fields = {}) {
    super(message);
    this.name = 'AtpError';
    this.kind = fields.kind ?? 'invalid';
    this.status = fields.status ?? 0;
    this.code = fields.code ?? null;
    this.body = fields.body ?? null;
  }
  static [Symbol.hasInstance](value) {
    return value instanceof Error && value.name === 'AtpError';
  }
}

module.exports = require('./wasm/atp_wasm.cjs');
module.exports.AtpError = AtpError;
/** The module is ready as soon as it is required; `init()` exists for parity with the browser build. */
module.exports.default = async function init() {};
