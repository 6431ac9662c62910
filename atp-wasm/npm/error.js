/**
 * Errors thrown by AtpClient, the DNS functions and verifyMessage are Errors named `AtpError`,
 * with `kind`, `status`, `code` and `body`. `instanceof AtpError` recognises them (also across
 * copies of the package).
 */
export class AtpError extends Error {
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
