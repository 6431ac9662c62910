// A TypeScript agent using atp-wasm, type-checked with `tsc` (strict) and then run against a real
// server: `node out/example.js <server>` (tests/npm/run.sh does both).
import init, {
  AtpClient,
  AtpSubscription,
  AtpError,
  dnsRecords,
  evaluateAts,
  generateDomainKey,
  resolveAtp,
  signMessage,
  verifyMessage,
  type AtpDiscovery,
  type AtpMessage,
  type AtsEvaluation,
  type DnsLookup,
  type DomainKey,
  type Health,
  type SendResult,
} from 'atp-wasm';

function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`FAILED: ${what}`);
}

async function main(server: string): Promise<void> {
  await init(); // a no-op in Node, needed once in browsers

  const alice = new AtpClient({ agentId: 'ts-alice', password: 'pw-1', server });
  const bob = new AtpClient({ agentId: 'ts-bob', password: 'pw-2', server, fetch: (url, init) => fetch(url, init) });
  const health: Health = await alice.health();
  await alice.register();
  await bob.register();

  const sent: SendResult = await alice.send('ts-bob', { subject: 'typed', body: 'hello from TypeScript' });
  const inbox: AtpMessage[] = await bob.recv({ wait: 5, pollInterval: 200 });
  assert(inbox.length === 1 && inbox[0].nonce === sent.nonce, 'bob got the message');
  assert((inbox[0].payload as { body: string }).body === 'hello from TypeScript', 'payload');
  const cursor: number = bob.cursor;

  // Push: the inbox as an async iterator (backlog, then live), and acknowledgement.
  const sub: AtpSubscription = bob.subscribe({ after: 0 });
  for await (const m of sub) {
    assert(m.nonce === sent.nonce, 'subscribe yields the message');
    break;
  }
  const removed: number = await bob.ack({ upTo: sub.lastId });
  assert(removed === 1, 'ack removed it');

  try {
    await alice.send('nobody', { body: 'x' });
    assert(false, 'an unknown recipient is refused');
  } catch (e) {
    assert(e instanceof AtpError, 'an AtpError');
    const status: number = e.status;
    const code: string | null = e.code;
    assert(status === 404 && code === '550 5.1.1' && e.kind === 'http', `404 5.1.1, got ${status} ${code}`);
  }

  // Sign as a server of the domain would, verify by key and over (here: a table) DNS.
  const key: DomainKey = generateDomainKey();
  const signed: string = signMessage(JSON.stringify(inbox[0]), key.privateKeyPem, 'default', health.domain);
  const lookup: DnsLookup = async (name, type) =>
    type === 'TXT' && name === `default.atk._atp.${health.domain}` ? [`v=atp1 k=ed25519 p=${key.publicKey}`] : [];
  const bySync: boolean = verifyMessage(signed, key.publicKey);
  const byDns: boolean = await verifyMessage(signed, { lookup });
  assert(bySync && byDns, 'signature verified');

  const discovery: AtpDiscovery = await resolveAtp(health.domain, {
    lookup: async (name, type) => (type === 'SVCB' && name === `_atp.${health.domain}` ? ['1 atp.host.test. port=17443'] : []),
  });
  assert(discovery.endpoints[0]?.url === 'https://atp.host.test:17443', 'discovery');
  const ats: AtsEvaluation = await evaluateAts('v=atp1 allow=ip:192.0.2.0/24 deny=all', '192.0.2.9');
  assert(ats.result === 'pass', 'ATS');
  const zone: string[] = dnsRecords(health.domain, '192.0.2.9', key.publicKey, { port: 17443 });
  console.log(`example.ts: ${inbox.length} message(s) at cursor ${cursor}; ${zone.length} zone lines; ATS ${ats.result}`);
}

main(process.argv[2] ?? 'localhost').catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
