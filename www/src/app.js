// The ATP browser app: sign in as an agent, read the inbox (live on the server's stream, polled
// where there is none) and delete read mail,
// compose and send, open a message and verify its signature in the browser (the sender domain's
// ATK key fetched over DNS over HTTPS), and DNS tools (generate a domain key and its records, check
// a domain's records). Everything ATP is done by the atp-wasm package (./atp-wasm/web.js).
import init, { AtpClient, AtpError, dnsRecords, generateDomainKey, parseAts, resolveAtp, verifyMessage } from './atp-wasm/web.js';

const $ = (id) => document.getElementById(id);
/** Ends a message with a full stop unless it has one. */
const sentence = (s) => (/[.!?)]$/.test(s.trim()) ? s.trim() : `${s.trim()}.`);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

// ---- settings (localStorage; ?doh= and ?poll= override and are saved) ----
const DEFAULTS = { dohUrl: 'https://cloudflare-dns.com/dns-query', pollSeconds: 5 };
function loadSettings() {
  let s = {};
  try {
    s = JSON.parse(localStorage.getItem('atp.settings') || '{}');
  } catch {}
  const q = new URLSearchParams(location.search);
  if (q.get('doh')) s.dohUrl = q.get('doh');
  if (q.get('poll')) s.pollSeconds = Number(q.get('poll'));
  s = { ...DEFAULTS, ...s };
  if (!(s.pollSeconds >= 0.2)) s.pollSeconds = DEFAULTS.pollSeconds;
  return s;
}
let settings = loadSettings();
function saveSettings() {
  try {
    localStorage.setItem('atp.settings', JSON.stringify(settings));
  } catch {}
}

// ---- session ----
let session = null; // { client, server, agentId, messages: [{ raw, msg, read }], timer, stopped }

function describeError(e, { server, action } = {}) {
  if (!(e instanceof AtpError)) return { text: String(e && e.message ? e.message : e) };
  const code = e.code ? ` (${e.code})` : '';
  if (e.kind === 'network' || (e.status === 0 && e.kind !== 'invalid' && e.kind !== 'dns')) {
    return networkError(server);
  }
  if (e.status === 401) return { text: `Wrong agent id or password.${code}` };
  if (action === 'register' && e.status === 409) return { text: `This agent is already registered; sign in instead.${code}` };
  if (action === 'register' && e.status === 403) return { text: `The server does not allow registering this agent: ${e.message}${code}` };
  if (e.kind === 'invalid') return { text: sentence(e.message) };
  if (e.kind === 'dns') return { text: sentence(`${e.message.replace(/DNS error 5$/, 'the DNS server refused the query (REFUSED)').replace(/DNS error 2$/, 'the DNS server failed (SERVFAIL)')}${code}`) };
  return { text: sentence(`${e.message}${code}`) };
}

/** Browsers do not say why a request failed: list the likely causes, with the certificate first. */
function networkError(server) {
  let url = server;
  try {
    const probe = new AtpClient({ server });
    url = probe.server;
    probe.free();
  } catch {}
  const health = `${url}/.well-known/atp/v1/health`;
  const box = el('div');
  box.append(el('p', { text: `Cannot reach the ATP server at ${url}.` }));
  const ul = el('ul');
  ul.append(el('li', { text: 'Is the server running, and are the address and port right?' }));
  if (url.startsWith('https:')) {
    const li = el('li');
    li.append(
      'Does your browser trust its certificate? atp servers use a self-signed certificate by default, which browsers refuse ' +
        'without asking. Open ',
      el('a', { href: health, target: '_blank', rel: 'noopener', text: health }),
      ' in a new tab and accept the certificate (or install it), or give the server a certificate your browser trusts; then try again.',
    );
    ul.append(li);
  }
  let origin = null;
  try {
    origin = new URL(url).origin;
  } catch {}
  if (origin && origin !== location.origin) {
    ul.append(el('li', {
      text: `This page comes from ${location.origin}; the server must allow it: start it with --cors-origin ${location.origin}.`,
    }));
  }
  box.append(ul);
  return { text: box.textContent, node: box };
}

function showAlert(node, err) {
  node.replaceChildren(err.node || err.text);
  node.hidden = false;
}

// ---- views ----
const VIEWS = ['signin', 'inbox', 'compose', 'message', 'tools', 'settings'];
function route() {
  const [name, arg] = location.hash.replace(/^#\/?/, '').split('/');
  let view = VIEWS.includes(name) ? name : session ? 'inbox' : 'signin';
  if (!session && ['inbox', 'compose', 'message'].includes(view)) view = 'signin';
  if (session && view === 'signin') view = 'inbox';
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const n of document.querySelectorAll('[data-auth]')) n.hidden = !session;
  for (const n of document.querySelectorAll('[data-noauth]')) n.hidden = !!session;
  if (view === 'message') showMessage(Number(arg));
  if (view === 'inbox') renderInbox();
  if (view === 'settings') fillSettings();
  if (view === 'compose') prepareCompose();
  for (const s of document.querySelectorAll('.doh-url')) s.textContent = settings.dohUrl;
  const title = $(`view-${view}`).querySelector('h1');
  document.title = `${title && title.textContent ? title.textContent + ' — ' : ''}ATP`;
  // Move focus to the new view for keyboard and screen-reader users (not on first load).
  if (routed) $('main').focus({ preventScroll: false });
  routed = true;
}
let routed = false;

// ---- sign in ----
async function signIn(register) {
  const server = $('si-server').value.trim();
  const agent = $('si-agent').value.trim();
  const password = $('si-password').value;
  const errBox = $('signin-error');
  errBox.hidden = true;
  if (!server || !agent || !password) {
    showAlert(errBox, { text: 'Enter the server, the agent id and the password.' });
    return;
  }
  const buttons = [$('signin-submit'), $('register-submit')];
  buttons.forEach((b) => (b.disabled = true));
  $('signin-form').setAttribute('aria-busy', 'true');
  try {
    const client = new AtpClient({ server, agentId: agent, password });
    if (register) await client.register();
    await client.recvRaw({ limit: 1 }); // checks the password
    client.cursor = 0; // the live stream brings the whole inbox, with each message's id
    session = { client, server, agentId: client.agentId, messages: [], stopped: false };
    try {
      localStorage.setItem('atp.last', JSON.stringify({ server, agent }));
    } catch {}
    $('si-password').value = '';
    $('who').textContent = client.agentId;
    location.hash = '#/inbox';
    route();
    live();
  } catch (e) {
    showAlert(errBox, describeError(e, { server, action: register ? 'register' : 'signin' }));
    (e instanceof AtpError && e.status === 401 ? $('si-password') : $('si-server')).focus();
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    $('signin-form').removeAttribute('aria-busy');
  }
}

function signOut() {
  if (session) {
    session.stopped = true;
    clearTimeout(session.timer);
    if (session.sub) session.sub.return().catch(() => {});
    try {
      session.client.free();
    } catch {}
  }
  session = null;
  $('inbox-list').replaceChildren();
  location.hash = '#/signin';
  route();
}

// ---- inbox ----
// `id`: the inbox id of the (one) message, known on the live stream; it makes the message deletable.
function addMessages(raws, id) {
  for (const raw of raws) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      msg = { from: '?', payload: { body: raw } };
    }
    session.messages.push({ raw, msg, read: false, id, deleted: false });
  }
  if (raws.length) {
    renderInbox();
    updateUnread();
  }
}

async function pollOnce() {
  const s = session;
  for (;;) {
    const raws = await s.client.recvRaw({ limit: 500 });
    if (s !== session) return;
    addMessages(raws);
    if (raws.length < 500) return;
  }
}

// The inbox live on the server's stream (docs/protocol.md §6.5): the backlog, then each message as
// it is stored; the client reconnects by itself. A server without a stream (the reference, the
// Workers relay for now) is polled every pollSeconds instead.
async function live() {
  const s = session;
  const sub = s.client.subscribe({ raw: true });
  s.sub = sub;
  $('poll-status').textContent = 'Live: new mail appears as it arrives.';
  try {
    for await (const raw of sub) {
      if (s !== session) return;
      addMessages([raw], sub.lastId);
    }
  } catch (e) {
    if (s !== session) return;
    if (e instanceof AtpError && (e.status === 404 || e.status === 501)) {
      $('poll-status').textContent = `This server has no live stream: checking every ${settings.pollSeconds} s.`;
      await pollOnce().catch(() => {});
      schedulePoll();
      return;
    }
    const err = describeError(e, { server: s.server });
    showAlert($('poll-error'), { text: `The live inbox stopped: ${err.text}`, node: err.node });
    if (e instanceof AtpError && e.status === 401) $('poll-error').append(' Sign out and sign in again.');
  }
}

// Deletes the message shown: acknowledged on the server, which removes it (docs/protocol.md §6.5).
async function deleteCurrent() {
  const m = current;
  if (!m || m.id === undefined) return;
  const box = $('msg-delete-error');
  box.hidden = true;
  $('msg-delete').disabled = true;
  try {
    await session.client.ack({ ids: [m.id] });
    m.deleted = true;
    renderInbox();
    updateUnread();
    location.hash = '#/inbox';
  } catch (e) {
    showAlert(box, describeError(e, { server: session.server }));
  } finally {
    $('msg-delete').disabled = false;
  }
}

function schedulePoll() {
  const s = session;
  if (!s || s.stopped) return;
  s.timer = setTimeout(async () => {
    try {
      await pollOnce();
      if (s !== session) return;
      $('poll-error').hidden = true;
      $('poll-status').textContent = `Up to date (checked ${new Date().toLocaleTimeString()}).`;
    } catch (e) {
      if (s !== session) return;
      const err = describeError(e, { server: s.server });
      showAlert($('poll-error'), { text: `Could not check for new mail: ${err.text}`, node: err.node });
      if (e instanceof AtpError && e.status === 401) {
        $('poll-error').append(' Sign out and sign in again.');
      }
    }
    schedulePoll();
  }, settings.pollSeconds * 1000);
}

const subjectOf = (m) => {
  const p = m.payload;
  if (p && typeof p === 'object') {
    if (typeof p.subject === 'string' && p.subject) return p.subject;
    if (typeof p.body === 'string' && p.body) return p.body.split('\n')[0].slice(0, 80);
  }
  return '(no subject)';
};
const when = (ts) => (Number.isFinite(ts) ? new Date(ts * 1000) : null);
const shortTime = (ts) => {
  const d = when(ts);
  if (!d) return '';
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : d.toLocaleDateString();
};

function renderInbox() {
  if (!session) return;
  const list = $('inbox-list');
  const items = session.messages.map((m, i) => [m, i]).filter(([m]) => !m.deleted).reverse();
  $('inbox-empty').hidden = items.length > 0;
  list.replaceChildren(
    ...items.map(([m, i]) => {
      const signed = !!m.msg.signature;
      const a = el('a', { href: `#/message/${i}`, class: m.read ? 'msg' : 'msg unread' },
        el('span', { class: 'from', text: m.msg.from || '?' }),
        el('span', { class: 'subject', text: subjectOf(m.msg) }),
        el('span', { class: `badge ${signed ? 'signed' : 'local'}`, text: signed ? 'signed' : 'local' }),
        el('time', { class: 'time', text: shortTime(m.msg.timestamp) }));
      if (!m.read) a.setAttribute('aria-label', `Unread: from ${m.msg.from}, ${subjectOf(m.msg)}`);
      return el('li', {}, a);
    }),
  );
}

function updateUnread() {
  const n = session ? session.messages.filter((m) => !m.read && !m.deleted).length : 0;
  const c = $('unread-count');
  c.hidden = n === 0;
  c.textContent = String(n);
  c.setAttribute('aria-label', `${n} unread`);
}

// ---- compose ----
let replyTo = null;
function prepareCompose() {
  if (replyTo) {
    $('c-to').value = replyTo.to;
    $('c-subject').value = replyTo.subject;
    replyTo = null;
  }
}

async function send() {
  const result = $('compose-result');
  result.hidden = true;
  result.className = 'alert';
  const to = $('c-to').value.trim();
  if (!to) {
    result.classList.add('error');
    showAlert(result, { text: 'Enter a recipient.' });
    $('c-to').focus();
    return;
  }
  const cc = $('c-cc').value.split(',').map((s) => s.trim()).filter(Boolean);
  const subject = $('c-subject').value;
  const body = $('c-body').value;
  $('compose-send').disabled = true;
  try {
    const r = await session.client.send(to, { subject: subject || undefined, body, cc: cc.length ? cc : undefined });
    result.classList.add('ok');
    showAlert(result, { text: `Sent to ${r.message.to} (accepted, nonce ${r.nonce}).` });
    $('compose-form').reset();
  } catch (e) {
    result.classList.add('error');
    showAlert(result, describeError(e, { server: session.server, action: 'send' }));
  } finally {
    $('compose-send').disabled = false;
  }
}

// ---- one message ----
let current = null;
function showMessage(i) {
  const m = session && session.messages[i];
  $('msg-delete').hidden = !m || m.deleted || m.id === undefined;
  $('msg-delete-error').hidden = true;
  if (!m || m.deleted) {
    $('msg-title').textContent = 'No such message';
    $('msg-fields').replaceChildren();
    $('verify-status').replaceChildren();
    return;
  }
  current = m;
  if (!m.read) {
    m.read = true;
    updateUnread();
  }
  const msg = m.msg;
  $('msg-title').textContent = subjectOf(msg);
  const dl = $('msg-fields');
  dl.replaceChildren();
  const add = (k, v, cls) => {
    if (v === undefined || v === null || v === '') return;
    dl.append(el('dt', { text: k }), el('dd', { text: String(v), ...(cls ? { class: cls } : {}) }));
  };
  add('From', msg.from);
  add('To', msg.to);
  if (Array.isArray(msg.cc) && msg.cc.length) add('Cc', msg.cc.join(', '));
  const d = when(msg.timestamp);
  add('Date', d ? `${d.toLocaleString()} (${msg.timestamp})` : msg.timestamp);
  add('Type', msg.type);
  add('Nonce', msg.nonce, 'mono');
  const p = msg.payload;
  if (p && typeof p === 'object' && !Array.isArray(p)) {
    add('Subject', p.subject);
    if (typeof p.body === 'string') add('Body', p.body, 'body');
    const rest = Object.fromEntries(Object.entries(p).filter(([k]) => k !== 'subject' && !(k === 'body' && typeof p.body === 'string')));
    if (Object.keys(rest).length) add('Payload', JSON.stringify(rest, null, 2), 'mono body');
  } else {
    add('Payload', JSON.stringify(p, null, 2), 'mono body');
  }
  if (msg.routing != null) add('Routing', JSON.stringify(msg.routing), 'mono');
  const sig = msg.signature;
  if (sig) {
    add('Signed by key', sig.key_id, 'mono');
    add('Algorithm', sig.algorithm);
    add('Signed fields', Array.isArray(sig.headers) ? sig.headers.join(', ') : sig.headers);
    const st = when(sig.timestamp);
    add('Signed at', st ? `${st.toLocaleString()} (${sig.timestamp})` : sig.timestamp);
  }
  $('msg-raw').textContent = JSON.stringify(msg, null, 2);
  $('verify-doh').hidden = !sig;
  $('verify-key-box').hidden = !sig;
  const from = String(msg.from || '');
  replyTo = null;
  $('msg-reply').onclick = () => {
    const subj = p && typeof p.subject === 'string' ? p.subject : '';
    replyTo = { to: from, subject: /^re:/i.test(subj) ? subj : `Re: ${subj}`.trim() };
  };
  if (!sig) {
    setVerify('none', 'Not signed (local delivery)', 'This message was submitted to your own server by one of its agents, so no server signed it. Only mail from other domains carries a signature.');
  } else {
    verifyDoh();
  }
}

function setVerify(kind, title, detail) {
  const box = $('verify-status');
  box.className = `verify ${kind}`;
  box.replaceChildren(el('strong', { text: title }), detail ? el('span', { text: ` ${detail}` }) : '');
}

const domainOf = (id) => String(id).split('@').pop();

async function verifyDoh() {
  const m = current;
  if (!m || !m.msg.signature) return;
  setVerify('pending', 'Checking the signature…', `Fetching ${m.msg.signature.key_id} over DNS over HTTPS (${settings.dohUrl}).`);
  try {
    await verifyMessage(m.raw, { dohUrl: settings.dohUrl });
    if (m !== current) return;
    setVerify('ok', `Valid signature from ${domainOf(m.msg.from)}.`, `Key ${m.msg.signature.key_id} (${m.msg.signature.algorithm}), fetched over DNS over HTTPS from ${settings.dohUrl}.`);
  } catch (e) {
    if (m !== current) return;
    verifyFailed(e, true);
  }
}

function verifyFailed(e, overDns) {
  const code = e && e.code ? ` (${e.code})` : '';
  if (e instanceof AtpError && (e.kind === 'dns' || e.kind === 'network' || e.status === 451)) {
    setVerify('warn', 'Could not check the signature.', `The key lookup failed: ${sentence(e.message + code)} Check the DNS-over-HTTPS resolver in Settings, or verify with a public key below.`);
  } else if (e instanceof AtpError && e.code === '550 5.7.29') {
    setVerify('bad', 'Signing key not found or not valid.', sentence(`${e.message}${code}`));
  } else {
    setVerify('bad', 'Invalid signature: this message does not verify.', sentence(`${e && e.message ? e.message : e}${code}${overDns ? '' : ', with the key you entered'}`));
  }
}

function verifyWithKey() {
  const m = current;
  const key = $('verify-key').value.trim();
  if (!m || !key) return;
  try {
    verifyMessage(m.raw, key);
    setVerify('ok', 'Valid signature for the key you entered.', `Key ${m.msg.signature.key_id}; the key itself was not looked up in DNS.`);
  } catch (e) {
    verifyFailed(e, false);
  }
}

// ---- DNS tools ----
function generate() {
  const err = $('gen-error');
  err.hidden = true;
  const domain = $('g-domain').value.trim().replace(/\.$/, '').toLowerCase();
  const ip = $('g-ip').value.trim();
  const port = Number($('g-port').value || 7443);
  const selector = $('g-selector').value.trim() || 'default';
  if (!domain || !ip) {
    showAlert(err, { text: 'Enter the domain and the IP address of its ATP server.' });
    return;
  }
  try {
    const key = generateDomainKey();
    const records = dnsRecords(domain, ip, key.publicKey, { selector, port });
    $('gen-records').textContent = records.join('\n');
    $('gen-private').value = key.privateKeyPem;
    $('gen-keypath').textContent = `~/.atp/keys/${selector}.key`;
    const dl = $('gen-download');
    if (dl.href.startsWith('blob:')) URL.revokeObjectURL(dl.href);
    dl.href = URL.createObjectURL(new Blob([key.privateKeyPem], { type: 'application/x-pem-file' }));
    dl.download = `${selector}.key`;
    $('gen-out').hidden = false;
    $('gen-records').focus();
  } catch (e) {
    showAlert(err, describeError(e));
  }
}

async function check() {
  const out = $('check-out');
  const domain = $('k-domain').value.trim().replace(/\.$/, '').toLowerCase();
  const selector = $('k-selector').value.trim() || 'default';
  if (!domain) {
    out.replaceChildren(el('p', { class: 'alert error', text: 'Enter a domain.' }));
    return;
  }
  out.replaceChildren(el('p', { class: 'hint', text: `Looking up ${domain} over ${settings.dohUrl}…` }));
  try {
    const d = await resolveAtp(domain, { dohUrl: settings.dohUrl, selector });
    const rows = el('ul', { class: 'checks' });
    const row = (ok, title, detail) => {
      const li = el('li', { class: ok ? 'ok' : 'bad' }, el('strong', { text: `${ok ? '✓' : '✗'} ${title}` }));
      if (detail) li.append(el('div', { class: 'mono detail', text: detail }));
      rows.append(li);
    };
    row(d.endpoints.length > 0, d.endpoints.length ? `Server found (SVCB _atp.${domain})` : `No server published (SVCB _atp / _agent, SRV _atp._tcp)`,
      d.endpoints.map((e) => `${e.url}  alpn=${e.alpn.join(',')}`).join('\n'));
    if (d.ats) {
      let detail = d.ats;
      let okAts = true;
      try {
        detail += '\n' + parseAts(d.ats).directives.map((x) => `  ${x.text}`).join('\n');
      } catch (e) {
        okAts = false;
        detail += `\n  invalid: ${e.message}`;
      }
      row(okAts, `Sender policy (ATS ats._atp.${domain})`, detail);
    } else {
      row(false, `No sender policy (ATS ats._atp.${domain}); receivers treat it as neutral`);
    }
    row(d.keys.length > 0, d.keys.length ? `Signing key (ATK ${selector}.atk._atp.${domain})` : `No valid signing key at ${selector}.atk._atp.${domain}`,
      d.keys.map((k) => `${k.record}${k.expires ? `\n  expires ${new Date(k.expires * 1000).toISOString()}` : ''}`).join('\n'));
    out.replaceChildren(el('h3', { text: `Records of ${d.domain}` }), rows);
  } catch (e) {
    const hint = e instanceof AtpError && e.kind !== 'invalid' ? ' Is the domain right? Check the DNS-over-HTTPS resolver in Settings.' : '';
    out.replaceChildren(el('p', { class: 'alert error', text: `The lookup failed: ${describeError(e).text}${hint}` }));
  }
}

// ---- settings ----
function fillSettings() {
  $('s-doh').value = settings.dohUrl;
  $('s-poll').value = String(settings.pollSeconds);
}
function saveSettingsForm() {
  const box = $('settings-result');
  box.className = 'alert';
  const doh = $('s-doh').value.trim();
  const poll = Number($('s-poll').value);
  try {
    const u = new URL(doh);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
  } catch {
    box.classList.add('error');
    showAlert(box, { text: 'The resolver must be an https:// URL, e.g. https://cloudflare-dns.com/dns-query.' });
    return;
  }
  if (!(poll >= 1 && poll <= 3600)) {
    box.classList.add('error');
    showAlert(box, { text: 'The interval must be between 1 and 3600 seconds.' });
    return;
  }
  settings = { ...settings, dohUrl: doh, pollSeconds: poll };
  saveSettings();
  box.classList.add('ok');
  showAlert(box, { text: 'Saved.' });
}

// ---- start ----
async function main() {
  try {
    await init();
  } catch (e) {
    $('loading').hidden = true;
    showAlert($('fatal'), { text: `The ATP module (WebAssembly) could not be loaded: ${e.message || e}` });
    return;
  }
  $('loading').hidden = true;
  let last = {};
  try {
    last = JSON.parse(localStorage.getItem('atp.last') || '{}');
  } catch {}
  const q = new URLSearchParams(location.search);
  $('si-server').value = q.get('server') || last.server || location.origin;
  if (last.agent) $('si-agent').value = last.agent;
  if (q.has('doh') || q.has('poll')) saveSettings();

  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    signIn(false);
  });
  $('register-submit').addEventListener('click', () => signIn(true));
  $('signout').addEventListener('click', signOut);
  $('compose-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    send();
  });
  $('compose-form').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      send();
    }
  });
  $('verify-doh').addEventListener('click', verifyDoh);
  $('msg-delete').addEventListener('click', deleteCurrent);
  $('verify-key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    verifyWithKey();
  });
  $('gen-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    generate();
  });
  $('gen-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('gen-records').textContent);
      $('gen-copy').textContent = 'Copied';
    } catch {
      $('gen-copy').textContent = 'Select the text and copy it';
    }
  });
  $('check-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    check();
  });
  $('settings-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    saveSettingsForm();
  });
  window.addEventListener('hashchange', route);
  route();
  document.body.dataset.ready = 'true';
}
main();
