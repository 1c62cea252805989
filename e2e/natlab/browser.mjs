#!/usr/bin/env node
// The NAT lab's browser peer: Debian's headless Chromium, driven by playwright-core, with
// the real PeerJS 1.5 client, run inside a home namespace (ip netns exec) the way the
// lab runs cmd/peer, and printing the same READY and RESULT lines.
//
// The page is served by playwright itself (page routes) under relay's own origin, so it
// fetches {path}ice same-origin and nothing but relay is ever contacted.
//
// Environment:
//   SIGNAL_URL     relay's signaling base URL, e.g. http://198.18.0.1:9001/ (required)
//   PEER_ID        this peer's id (required)
//   CALL           the id to call; empty: answer calls
//   POLICY         ICE transport policy: all (default) or relay
//   SERIALIZATION  PeerJS serialization of the call ("raw" to talk to cmd/peer; default binary)
//   TIMEOUT_MS     give up after this long (default 20000)
//   NODE_MODULES   the node_modules holding playwright-core and peerjs (e2e/browser's)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//   PROFILE_DIR    where to make the throwaway browser profile (default the system temp dir)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;
const SIGNAL_URL = env.SIGNAL_URL;
const TIMEOUT_MS = Number(env.TIMEOUT_MS || 20000);
const modules = env.NODE_MODULES;
const { chromium } = await import(pathToFileURL(path.join(modules, 'playwright-core', 'index.mjs')).href);
const peerjs = fs.readFileSync(path.join(modules, 'peerjs', 'dist', 'peerjs.min.js'), 'utf8');

const result = { role: env.CALL ? 'call' : 'answer', connected: false, srflx: [], relayed: [], ice_servers: [] };
const log = (...a) => process.stderr.write(a.join(' ') + '\n');

// The page: PeerJS with relay's ICE servers; the caller sends 'click' once the data
// connection opens and waits for 'Hello World!'; the answerer alerts and replies.
const page_html = `<!doctype html><meta charset="utf-8"><title>natlab</title>
<script src="natlab-peerjs.js"></script>
<script>
window.lab = { open: false, connected: false, message: null, ms: null, errors: [], iceURLs: [] };
let conn = null;
window.labPC = () => conn && conn.peerConnection;
(async () => {
  const q = new URLSearchParams(location.search);
  const ice = await (await fetch('ice')).json();
  lab.iceURLs = ice.iceServers.flatMap((s) => [].concat(s.urls));
  const u = new URL(location.href);
  const peer = new Peer(q.get('id'), { host: u.hostname, port: Number(u.port), path: u.pathname.replace(/[^/]*$/, ''),
    key: 'peerjs', secure: false, config: { iceServers: ice.iceServers, iceTransportPolicy: q.get('policy') }, debug: 1 });
  peer.on('error', (e) => lab.errors.push('peer: ' + e.type + ': ' + e.message));
  peer.on('open', () => {
    lab.open = true;
    const call = q.get('call');
    if (!call) return;
    const t0 = performance.now();
    const opts = { reliable: true };
    if (q.get('serialization')) opts.serialization = q.get('serialization');
    conn = peer.connect(call, opts);
    conn.on('open', () => { lab.connected = true; conn.send('click'); });
    conn.on('data', (d) => { lab.message = String(d); lab.ms = performance.now() - t0; });
    conn.on('error', (e) => lab.errors.push('connection: ' + e));
  });
  peer.on('connection', (c) => {
    conn = c;
    c.on('open', () => { lab.connected = true; });
    c.on('data', (d) => {
      if (d !== 'click') return;
      c.send('Hello World!');
      lab.message = 'Hello World!';
      alert('Hello World!');
    });
  });
})().catch((e) => lab.errors.push(String(e)));
</script>`;

// The nominated pair, its candidates and every local candidate, from getStats.
async function stats(page) {
  return page.evaluate(async () => {
    const pc = window.labPC();
    if (!pc) return null;
    const st = await pc.getStats();
    let pair = null;
    st.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = st.get(s.selectedCandidatePairId);
    });
    st.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    const locals = [];
    st.forEach((s) => {
      if (s.type === 'local-candidate') locals.push({ type: s.candidateType, address: s.address + ':' + s.port });
    });
    const out = { iceState: pc.iceConnectionState, locals };
    if (pair) {
      const l = st.get(pair.localCandidateId) || {};
      const r = st.get(pair.remoteCandidateId) || {};
      Object.assign(out, { local: l.candidateType, localAddress: l.address + ':' + l.port, relayProtocol: l.relayProtocol,
        remote: r.candidateType, remoteAddress: r.address + ':' + r.port });
    }
    return out;
  });
}

const profile = fs.mkdtempSync(path.join(env.PROFILE_DIR || os.tmpdir(), 'natlab-chromium-'));
let ctx = null;
// The lab stops an answerer with SIGTERM: close the browser and remove the profile.
process.on('SIGTERM', async () => {
  if (ctx) await ctx.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(0);
});
try {
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
  const base = new URL(SIGNAL_URL);
  await ctx.route(new URL('natlab.html', base).href + '*', (r) => r.fulfill({ contentType: 'text/html', body: page_html }));
  await ctx.route(new URL('natlab-peerjs.js', base).href, (r) => r.fulfill({ contentType: 'text/javascript', body: peerjs }));
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on('console', (m) => log('console.' + m.type() + ':', m.text()));
  page.on('pageerror', (e) => log('pageerror:', e.message));
  page.on('dialog', (d) => { log('dialog:', d.message()); d.accept().catch(() => {}); });
  const u = new URL('natlab.html', base);
  u.searchParams.set('id', env.PEER_ID);
  u.searchParams.set('policy', env.POLICY || 'all');
  if (env.CALL) u.searchParams.set('call', env.CALL);
  if (env.SERIALIZATION) u.searchParams.set('serialization', env.SERIALIZATION);
  await page.goto(u.href);
  const deadline = Date.now() + TIMEOUT_MS;
  const lab = () => page.evaluate(() => window.lab);
  for (let s = await lab(); !s.open; s = await lab()) {
    if (s.errors.length) throw new Error(s.errors.join('; '));
    if (Date.now() > deadline) throw new Error('signaling never opened');
    await new Promise((r) => setTimeout(r, 50));
  }
  console.log('READY');
  for (;;) {
    const s = await lab();
    result.ice_servers = s.iceURLs;
    if (s.errors.length) throw new Error(s.errors.join('; '));
    if (s.message === 'Hello World!') {
      result.connected = true;
      result.message = s.message;
      if (s.ms != null) result.millis = Math.round(s.ms * 10) / 10;
      break;
    }
    if (Date.now() > deadline) {
      result.error = `no "Hello World!" within ${TIMEOUT_MS} ms`;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // The pair when the first message arrived, and after a second: Chromium switches to a
  // better pair as more checks succeed.
  const first = await stats(page);
  if (first && first.local) result.first_pair = first.local + ' / ' + first.remote;
  await new Promise((r) => setTimeout(r, 1000));
  const st = await stats(page);
  if (st) {
    result.ice_state = st.iceState;
    result.srflx = st.locals.filter((c) => c.type === 'srflx').map((c) => c.address);
    result.relayed = st.locals.filter((c) => c.type === 'relay').map((c) => c.address);
    if (st.local) {
      Object.assign(result, { local_type: st.local, local_addr: st.localAddress, remote_type: st.remote, remote_addr: st.remoteAddress });
      if (st.local === 'relay') result.local_relay_protocol = st.relayProtocol;
    }
  }
  if (result.role === 'answer' && result.connected) {
    // Stay until the caller has its answer (the lab stops us).
    console.log('RESULT ' + JSON.stringify(result));
    await new Promise((r) => setTimeout(r, TIMEOUT_MS));
    process.exit(0);
  }
} catch (e) {
  result.error = String(e && e.message ? e.message : e);
}
console.log('RESULT ' + JSON.stringify(result));
if (ctx) await ctx.close().catch(() => {});
fs.rmSync(profile, { recursive: true, force: true });
process.exit(0);
