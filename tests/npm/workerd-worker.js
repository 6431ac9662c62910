// A Cloudflare Worker using the package's workerd entry (the .wasm imported as a compiled module),
// run in workerd by workerd.mjs. GET /?server=<atp server URL> exercises the tools and AtpClient.
import { AtpClient, AtpError, canonicalize, generateDomainKey, signMessage, verifyMessage } from './node_modules/atp-wasm/worker.js';

export default {
  async fetch(request) {
    const server = new URL(request.url).searchParams.get('server');
    const out = { canonical: canonicalize('{"b":1e-05,"a":[1.0]}') };
    const key = generateDomainKey();
    const msg = JSON.stringify({ from: 'w@worker.test', to: 'x@y.test', timestamp: 1800000000, nonce: 'msg-w-1',
      type: 'message', payload: { body: 'hi' } });
    out.verified = verifyMessage(signMessage(msg, key.privateKeyPem, 'default', 'worker.test'), key.publicKey);
    const alice = new AtpClient({ agentId: 'w-alice', password: 'pw', server });
    out.domain = (await alice.health()).domain;
    await alice.register();
    out.sent = (await alice.send('w-alice', { body: 'from a worker' })).status;
    out.received = (await alice.recv()).map((m) => m.payload.body);
    try {
      await alice.send('nobody', { body: 'x' });
    } catch (e) {
      out.error = [e instanceof AtpError, e.kind, e.status, e.code];
    }
    return Response.json(out);
  },
};
