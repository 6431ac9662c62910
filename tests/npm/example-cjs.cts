// The CommonJS view of the types (require: index.d.cts), type-checked only.
import atp = require('atp-wasm');

const client: atp.AtpClient = new atp.AtpClient({ server: 'example.com', agentId: 'alice', password: 'pw' });
const error: atp.AtpError = new atp.AtpError('x', { kind: 'http', status: 500 });
const canon: string = atp.canonicalize('{"b":1,"a":2}');
const pending: Promise<atp.AtpMessage[]> = client.recv({ limit: 5 });
void error;
void canon;
void pending;
export {};
