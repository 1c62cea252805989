#!/usr/bin/env node
// Browser end-to-end scenarios for relay, driven through playwright-core and Debian's
// /usr/bin/chromium, and through puppeteer-core (WebDriver BiDi) and Debian's
// /usr/bin/firefox-esr (browsers.mjs; never a downloaded browser). One scenario per run:
//
//   node run.mjs peerjs      two pages with the PeerJS 1.5.x client
//   node run.mjs peerjs-tcp  the same with TURN over TCP only (relayProtocol must be tcp)
//   node run.mjs peerjs-fleet  the same across a fleet: the callee on SIGNAL_URL (node 1),
//                the caller on SIGNAL_URL_B (node 2), both with ICE from ICE_URL
//   node run.mjs peerjs-revoke  the peerjs call with credentials bound to the pages' sessions;
//                the caller sends ticks, the scenario revokes the caller's id through the
//                admin API (ADMIN_URL): the ticks must stop within 2 s
//   node run.mjs peerjs-bind  the same, but the caller's page closes its signaling socket
//                (peer.disconnect()): the ticks go on within the grace (GRACE_MS) and stop
//                within 2 s after it
//   node run.mjs legacy      two pages with the 0.3.x client, idle IDLE_MS before connecting
//   node run.mjs demo        relay's own demo page ({path}demo) in two tabs
//   node run.mjs demo-wss    the same over https and wss (SIGNAL_URL https://, a test certificate)
//   node run.mjs diag        relay's diagnostics page ({path}diag): relay candidates over UDP and TCP
//   node run.mjs peerjs-oneport  PeerJS 1.5.x with secure: true, everything on one https port
//                (SIGNAL_URL): the page (given to the browser under that origin by request
//                interception, since relay serves only its own pages), the wss socket,
//                {path}ice and turns: on the same port; relayProtocol must be tls
//   node run.mjs demo-oneport    relay's demo page on such a port, whose only TURN URL is turns:
//
// Every WebRTC connection uses iceTransportPolicy 'relay', so its data must cross the TURN
// server; a scenario passes only if the nominated candidate pair is relay/relay.
//
// Environment:
//   SIGNAL_URL   signaling base URL, path included (e.g. http://127.0.0.1:9001/); required
//   SIGNAL_URL_B peerjs-fleet: the caller's signaling base URL (another node of the fleet)
//   ICE_URL      ICE servers JSON (default SIGNAL_URL + "ice", relay's {path}ice)
//   PAGES_URL    base URL serving pages/ and /lib/{peerjs,peerjs-legacy}/ (default: a
//                static server this script starts itself)
//   ARTIFACTS    directory for screenshots (default ./artifacts beside this script)
//   IDLE_MS      legacy scenario: idle time between registering and connecting (default 7000)
//   STEP_MS      deadline of each wait (default 30000)
//   CHROMIUM     browser executable (default /usr/bin/chromium)
//   FIREFOX      firefox-esr executable (default /usr/bin/firefox-esr)
//   CALLEE_BROWSER, CALLER_BROWSER  chromium (default) or firefox: the browser of the
//                called page (callee, demo tab A, diag) and of the calling one (caller,
//                demo tab B); a Chromium page may call a Firefox one and the other way
//   IGNORE_CERT_ERRORS  1: accept the signaling server's self-signed test certificate
//   ADMIN_URL    peerjs-revoke: relay's admin API (e.g. http://127.0.0.1:9642)
//   GRACE_MS     peerjs-bind: relay's [signal] credential_grace in ms (default 2000)
//
// Output: one JSON line on stdout, {"scenario":..,"ok":true,"pair":{"local":"relay",
// "remote":"relay"},"ms":..}; on failure {"scenario":..,"ok":false,"error":..} with page
// logs on stderr, and exit status 1.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Browsers } from './browsers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// Selectors and globals of relay's own pages (web/), in one place: the page authors may
// still rename them.
const DEMO = {
  route: 'demo',
  global: 'relayDemo', // {state, myId, pairType: {local, remote} | null, lastError}
  connectedStates: ['connected'],
  sel: {
    myId: '#my-id',
    connect: '#connect',
    peerId: '#peer-id',
    call: '#call',
    relayOnly: '#relay-only',
    status: '#status',
    path: '#path',
    chatInput: '#chat-input',
    chatSend: '#chat-send',
    chatLog: '#chat-log',
  },
  // Where to click "anywhere" to send 'click': the status line, which is not a control.
  clickTarget: '#status',
};
const DIAG = {
  route: 'diag',
  global: 'relayDiag', // {done, results: [{transport, url, srflx, srflxAddress, relay, relayAddress, ms, errors}]}
  mustRelay: ['udp', 'tcp'],
};

const LAUNCH_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
];
if (process.env.IGNORE_CERT_ERRORS === '1') LAUNCH_ARGS.push('--ignore-certificate-errors');
// A page given by request interception (servePagesAt) has no address, so Chromium's
// Local Network Access checks count it as public and block its WebSocket to 127.0.0.1;
// a page really served from that port is local and is not blocked.
if (process.argv[2] === 'peerjs-oneport') LAUNCH_ARGS.push('--disable-features=LocalNetworkAccessChecks');

const env = process.env;
const scenario = process.argv[2];
const STEP_MS = Number(env.STEP_MS || 30000);
const IDLE_MS = Number(env.IDLE_MS || 7000);
const ARTIFACTS = path.resolve(env.ARTIFACTS || path.join(here, 'artifacts'));
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const FIREFOX = env.FIREFOX || '/usr/bin/firefox-esr';
const CALLEE_BROWSER = env.CALLEE_BROWSER || 'chromium';
const CALLER_BROWSER = env.CALLER_BROWSER || 'chromium';

class Failure extends Error {}

function withSlash(u) {
  return u.endsWith('/') ? u : u + '/';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitUntil polls cond (which may be async) until it returns a truthy value or STEP_MS
// pass; the failure message carries what detail() says about the state at that moment.
async function waitUntil(what, cond, detail, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) {
      let d = '';
      try {
        d = detail ? ' ' + JSON.stringify(await detail()) : '';
      } catch (e) {
        d = ' (state unreadable: ' + e.message + ')';
      }
      throw new Failure(`timed out after ${ms} ms waiting for ${what}.${d}`);
    }
    await sleep(100);
  }
}

const randomId = (prefix) => prefix + Math.random().toString(36).slice(2, 10);

// ---- pages ----

const tabs = [];

// openTab opens url in a new page of the callee's browser, or of the caller's for the
// calling tabs (caller, demo-b).
async function openTab(ctx, name, url) {
  const kind = name === 'caller' || name === 'demo-b' ? CALLER_BROWSER : CALLEE_BROWSER;
  const page = await ctx.newPage(kind);
  const tab = { name, kind, page, dialogs: [], logs: [] };
  tabs.push(tab);
  page.on('dialog', async (d) => {
    tab.dialogs.push({ type: d.type(), message: d.message() });
    tab.logs.push(`dialog ${d.type()}: ${d.message()}`);
    await d.accept().catch(() => {});
  });
  page.on('console', (m) => tab.logs.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => tab.logs.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => tab.logs.push(`requestfailed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) tab.logs.push(`http ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  tab.logs.push(`goto ${url}`);
  const resp = await page.goto(url, { waitUntil: 'load', timeout: STEP_MS });
  if (!resp || !resp.ok()) throw new Failure(`${name}: GET ${url}: HTTP ${resp ? resp.status() : 'no response'}`);
  return tab;
}

const evalIn = (tab, fn, arg) => tab.page.evaluate(fn, arg);

async function waitDialog(tab) {
  await waitUntil(`the alert on the ${tab.name} tab`, () => tab.dialogs.length > 0, () => ({ dialogs: tab.dialogs }));
  const d = tab.dialogs[0];
  if (d.type !== 'alert' || d.message !== 'Hello World!') {
    throw new Failure(`${tab.name}: expected alert('Hello World!'), got ${d.type}(${JSON.stringify(d.message)})`);
  }
  return d.message;
}

// requireRelay checks one side's nominated pair: local relay, remote relay. A remote
// "prflx" counts as relay when its address is the other side's local relay address:
// the other side's connectivity check arrived before its relay candidate was signaled
// (RFC 8445 7.3.1.3), which Firefox, getting candidates late over PeerJS, sometimes sees.
function requireRelay(name, pair, other) {
  const remoteIsRelay = pair && (pair.remote === 'relay' ||
    (pair.remote === 'prflx' && other && other.local === 'relay' && pair.remoteAddress &&
      pair.remoteAddress === other.localAddress));
  if (!pair || pair.local !== 'relay' || !remoteIsRelay) {
    throw new Failure(`${name}: nominated candidate pair is ${JSON.stringify(pair)}, want local relay / remote relay`);
  }
}

async function screenshot(tab, file) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const p = path.join(ARTIFACTS, file);
  await tab.page.screenshot({ path: p, fullPage: true });
  return p;
}

// ---- PeerJS test pages (pages/*.html) ----

function testPageURL(file, params, signal = SIGNAL_URL) {
  const u = new URL(file, PAGES_URL);
  u.searchParams.set('signal', signal);
  if (env.ICE_URL) u.searchParams.set('ice', env.ICE_URL);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
}

const testState = (tab) => evalIn(tab, () => window.testState);

async function waitTestState(tab, what, pred) {
  return waitUntil(
    `${what} (${tab.name} tab)`,
    async () => {
      const s = await testState(tab);
      if (s && s.errors.length) throw new Failure(`${tab.name} tab reported errors: ${s.errors.join('; ')}`);
      return s && pred(s) ? s : null;
    },
    () => testState(tab),
  );
}

async function testPair(tab) {
  return waitUntil(`a succeeded nominated candidate pair (${tab.name} tab)`, () => evalIn(tab, () => window.testPair()), () =>
    testState(tab),
  );
}

// callerSignal, when set, is another signaling server for the caller's page (another
// node of a fleet): the offer, answer and candidates must then cross nodes.
async function peerjsScenario(ctx, file, idleMs, turn, callerSignal, params = {}) {
  const extra = { ...params };
  if (idleMs > 0) extra.manual = '1'; // connect only when told, after the idle time
  if (turn) extra.turn = turn;
  const calleeId = randomId('callee');
  const callerId = randomId('caller');
  const callee = await openTab(ctx, 'callee', testPageURL(file, { id: calleeId, ...extra }));
  await waitTestState(callee, 'the callee to register', (s) => s.open);
  const caller = await openTab(ctx, 'caller', testPageURL(file, { id: callerId, call: calleeId, ...extra }, callerSignal || SIGNAL_URL));
  await waitTestState(caller, 'the caller to register', (s) => s.open);
  const out = {};
  if (callerSignal) out.signal = { callee: SIGNAL_URL, caller: callerSignal };
  if (idleMs > 0) {
    // The idle time is what this scenario tests (longer than the server's alive_timeout,
    // with a client that sends no HEARTBEAT), not a synchronisation.
    await sleep(idleMs);
    for (const tab of [callee, caller]) {
      const s = await testState(tab);
      if (s.errors.length || !s.open || s.disconnected) {
        throw new Failure(`${tab.name} lost its signaling connection while idle for ${idleMs} ms: ${JSON.stringify(s)}`);
      }
    }
    out.idleMs = idleMs;
    await evalIn(caller, () => window.testConnect());
  }
  await waitTestState(caller, 'the data connection to open and send', (s) => s.sent);
  out.dialog = await waitDialog(callee);
  const pair = await testPair(caller);
  const calleePair = await testPair(callee);
  requireRelay('caller', pair, calleePair);
  requireRelay('callee', calleePair, pair);
  if (turn && (pair.relayProtocol !== turn || calleePair.relayProtocol !== turn)) {
    throw new Failure(`relay candidates over ${pair.relayProtocol} and ${calleePair.relayProtocol}, want ${turn} only`);
  }
  lastCall = { caller, callee, callerId, calleeId };
  return { pair: { local: pair.local, remote: pair.remote }, caller: pair, callee: calleePair, ids: { caller: callerId, callee: calleeId }, ...out };
}

// lastCall is the pages and ids of the last peerjsScenario, for the scenarios that go on.
let lastCall;

// startTicks has the caller send ticks every 50 ms and waits until the callee counts them.
async function startTicks() {
  const { caller, callee } = lastCall;
  await evalIn(caller, () => window.testTicks(50));
  await waitTestState(callee, 'ticks from the caller', (s) => s.ticks >= 10);
}

// ticksStop watches the callee's ticks from `from` (ms since the epoch) for watchMs and
// returns when the last one arrived, relative to from.
async function ticksStop(from, watchMs) {
  // The watch time is the measurement (do the ticks stop, and when), not a wait for an event.
  await sleep(Math.max(0, from + watchMs - Date.now()));
  const s = await testState(lastCall.callee);
  return { lastTickMs: s.lastTickAt - from, ticks: s.ticks };
}

// peerjs-revoke: revoking the caller's user id (its peer id: bound credentials) through
// the admin API ends its allocations, and with them the data path, within 2 s.
async function revokeScenario(ctx) {
  if (!env.ADMIN_URL) throw new Failure('peerjs-revoke: ADMIN_URL is not set (relay\'s admin API, e.g. http://127.0.0.1:9642)');
  const out = await peerjsScenario(ctx, 'peerjs.html', 0, undefined, undefined, { bind: '1' });
  await startTicks();
  const t0 = Date.now();
  const resp = await fetch(new URL('v1/revocations', withSlash(env.ADMIN_URL)), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: lastCall.callerId }),
  });
  if (resp.status !== 201) throw new Failure(`POST /v1/revocations: HTTP ${resp.status} ${await resp.text()}`);
  const stop = await ticksStop(t0, 4000);
  if (stop.lastTickMs > 2000) throw new Failure(`ticks still arrived ${stop.lastTickMs} ms after the caller's id was revoked, want none after 2000 ms`);
  if (stop.lastTickMs < -1000) throw new Failure(`the ticks had stopped ${-stop.lastTickMs} ms before the revocation`);
  return { ...out, revoked: lastCall.callerId, lastTickAfterRevokeMs: stop.lastTickMs, ticks: stop.ticks };
}

// peerjs-bind: the caller's page closes its signaling socket (the data connection
// stays); within the grace the ticks go on, and after it its credentials are revoked and
// the ticks stop within 2 s.
async function bindScenario(ctx) {
  const grace = Number(env.GRACE_MS || 2000);
  const out = await peerjsScenario(ctx, 'peerjs.html', 0, undefined, undefined, { bind: '1' });
  await startTicks();
  const t0 = Date.now();
  await evalIn(lastCall.caller, () => window.testDisconnect());
  const during = await ticksStop(t0, grace / 2);
  if (during.lastTickMs < grace / 2 - 500) {
    throw new Failure(`ticks stopped ${during.lastTickMs} ms after the caller's signaling socket closed, within the grace of ${grace} ms`);
  }
  const after = await ticksStop(t0, grace + 4000);
  if (after.lastTickMs > grace + 2000) {
    throw new Failure(`ticks still arrived ${after.lastTickMs} ms after the caller's signaling socket closed, want none after the grace (${grace} ms) + 2000 ms`);
  }
  return { ...out, disconnected: lastCall.callerId, graceMs: grace, lastTickAfterDisconnectMs: after.lastTickMs, ticks: after.ticks };
}

// servePagesAt gives the browser pages/ at base + '_test/' and the PeerJS builds at
// /lib/, under base's origin, by request interception: the test pages then share an
// origin (and a port) with relay's signaling. Everything else still goes to the network.
async function servePagesAt(ctx, base) {
  const origin = new URL(base).origin;
  const files = [
    [new URL('_test/', base).href, path.join(here, 'pages')],
    [origin + '/lib/peerjs/', path.join(here, 'node_modules/peerjs/dist')],
  ];
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };
  for (const [prefix, dir] of files) {
    await ctx.route(prefix, (url) => {
      const rel = decodeURIComponent(new URL(url).pathname.slice(new URL(prefix).pathname.length));
      const file = path.join(dir, path.normalize('/' + rel));
      if (!file.startsWith(dir) || !fs.existsSync(file)) return { status: 404, contentType: 'text/plain', body: 'not found' };
      return { status: 200, contentType: types[path.extname(file)] || 'application/octet-stream', body: fs.readFileSync(file) };
    });
  }
  return new URL('_test/', base).href;
}

// requireProtocol checks a demo result: both tabs relay over want (udp, tcp or tls).
function requireProtocol(result, want) {
  const got = [result.relayProtocol, result.calleeRelayProtocol];
  if (got.some((p) => p !== want)) throw new Failure(`relay candidates over ${got.join(' and ')}, want ${want} on both tabs`);
  return result;
}

// ---- relay's demo page ----

const demoState = (tab) => evalIn(tab, (g) => window[g] || null, DEMO.global);

// Tab A is set up by URL (?id=A&relay=1), tab B through the form (id, Connect, Relay
// only, other id, Call). A click on B's page shows the alert on A; a chat line from B
// shows in A's log.
async function demoScenario(ctx) {
  const base = new URL(DEMO.route, SIGNAL_URL);
  const aId = randomId('demoa');
  const bId = randomId('demob');
  const a = await openTab(ctx, 'demo-a', `${base.href}?id=${aId}&relay=1`);
  await waitDemo(a, 'demo tab A to register', (s) => s.myId === aId && s.state === 'open');
  if (!(await a.page.isChecked(DEMO.sel.relayOnly))) throw new Failure(`demo-a: ${DEMO.sel.relayOnly} is not checked with relay=1`);

  const b = await openTab(ctx, 'demo-b', base.href);
  await b.page.fill(DEMO.sel.myId, bId);
  await b.page.click(DEMO.sel.connect);
  await waitDemo(b, 'demo tab B to register', (s) => s.myId === bId && s.state === 'open');
  await b.page.check(DEMO.sel.relayOnly);
  await b.page.fill(DEMO.sel.peerId, aId);
  await b.page.click(DEMO.sel.call);
  for (const tab of [a, b]) {
    await waitDemo(tab, `the ${tab.name} tab to connect and know its path`, (s) => DEMO.connectedStates.includes(s.state) && s.pairType);
  }
  const shots = [await screenshot(a, 'demo-a.png'), await screenshot(b, 'demo-b.png')];

  await b.page.click(DEMO.clickTarget);
  const dialog = await waitDialog(a);

  const text = 'hello from ' + bId;
  await b.page.fill(DEMO.sel.chatInput, text);
  await b.page.click(DEMO.sel.chatSend);
  await waitDemo(a, 'the chat line on tab A', (s) => s.chat.some((m) => m.from === 'them' && m.text === text));
  const logText = await a.page.textContent(DEMO.sel.chatLog);
  if (!logText.includes(text)) throw new Failure(`demo-a: ${DEMO.sel.chatLog} lacks ${JSON.stringify(text)}: ${JSON.stringify(logText)}`);

  const sa = await demoState(a);
  const sb = await demoState(b);
  requireRelay('demo-a', sa.pairType, sb.pairType);
  requireRelay('demo-b', sb.pairType, sa.pairType);
  const pathText = await b.page.textContent(DEMO.sel.path);
  shots.push(await screenshot(a, 'demo-a-after.png'), await screenshot(b, 'demo-b-after.png'));
  return {
    pair: sb.pairType,
    callee: sa.pairType,
    relayProtocol: sb.relayProtocol,
    calleeRelayProtocol: sa.relayProtocol,
    path: pathText,
    dialog,
    chat: text,
    screenshots: shots.map((p) => path.basename(p)),
  };
}

async function waitDemo(tab, what, pred) {
  return waitUntil(
    what,
    async () => {
      const s = await demoState(tab);
      if (s && (s.state === 'error' || s.state === 'closed')) {
        throw new Failure(`${tab.name}: state ${s.state}, lastError ${JSON.stringify(s.lastError)}`);
      }
      return s && pred(s) ? s : null;
    },
    () => demoState(tab),
  );
}

// ---- relay's diagnostics page ----

const diagState = (tab) => evalIn(tab, (g) => window[g] || null, DIAG.global);

async function diagScenario(ctx) {
  const tab = await openTab(ctx, 'diag', new URL(DIAG.route, SIGNAL_URL).href);
  const s = await waitUntil('the diagnostics to finish', async () => ((await diagState(tab))?.done ? diagState(tab) : null), () =>
    diagState(tab),
  );
  const shot = await screenshot(tab, 'diag.png');
  const summary = {};
  for (const r of s.results || []) {
    summary[r.transport] = { relay: r.relay, relayAddress: r.relayAddress, srflx: r.srflx, ms: r.ms, errors: r.errors };
  }
  for (const t of DIAG.mustRelay) {
    const r = (s.results || []).find((x) => x.transport === t);
    if (!r) throw new Failure(`diag: no ${t} result in ${JSON.stringify(s)}`);
    if (!r.relay) throw new Failure(`diag: no relay candidate over ${t}: ${JSON.stringify(r)}`);
  }
  return { results: summary, screenshots: [path.basename(shot)] };
}

// ---- a static server for running this script by hand ----

function serveStatic() {
  const roots = [
    ['/lib/peerjs/', path.join(here, 'node_modules/peerjs/dist')],
    ['/lib/peerjs-legacy/', path.join(here, 'node_modules/peerjs-legacy/dist')],
    ['/', path.join(here, 'pages')],
  ];
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.map': 'application/json' };
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    for (const [prefix, dir] of roots) {
      if (!p.startsWith(prefix)) continue;
      const file = path.join(dir, path.normalize('/' + p.slice(prefix.length)));
      if (file.startsWith(dir) && fs.existsSync(file) && fs.statSync(file).isFile()) {
        res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
        fs.createReadStream(file).pipe(res);
        return;
      }
    }
    res.writeHead(404).end('not found');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ---- main ----

const scenarios = {
  peerjs: (ctx) => peerjsScenario(ctx, 'peerjs.html', 0),
  'peerjs-tcp': (ctx) => peerjsScenario(ctx, 'peerjs.html', 0, 'tcp'),
  'peerjs-fleet': (ctx) => {
    if (!env.SIGNAL_URL_B) throw new Failure('peerjs-fleet: SIGNAL_URL_B is not set (the caller\'s node, e.g. http://127.0.0.1:9002/)');
    return peerjsScenario(ctx, 'peerjs.html', 0, undefined, withSlash(env.SIGNAL_URL_B));
  },
  'peerjs-revoke': revokeScenario,
  'peerjs-bind': bindScenario,
  legacy: (ctx) => peerjsScenario(ctx, 'legacy.html', IDLE_MS),
  'peerjs-oneport': async (ctx) => {
    if (!SIGNAL_URL.startsWith('https:')) throw new Failure('peerjs-oneport: SIGNAL_URL must be https://');
    PAGES_URL = await servePagesAt(ctx, SIGNAL_URL);
    return peerjsScenario(ctx, 'peerjs.html', 0, 'tls');
  },
  'demo-oneport': async (ctx) => requireProtocol(await demoScenario(ctx), 'tls'),
  demo: demoScenario,
  'demo-wss': demoScenario,
  diag: diagScenario,
};

let SIGNAL_URL;
let PAGES_URL;

async function main() {
  if (!scenarios[scenario]) {
    console.error(`usage: node run.mjs ${Object.keys(scenarios).join('|')}`);
    return 2;
  }
  const t0 = Date.now();
  let server;
  const ctx = new Browsers({ chromiumPath: CHROMIUM, chromiumArgs: LAUNCH_ARGS, firefoxPath: FIREFOX, insecure: env.IGNORE_CERT_ERRORS === '1' });
  try {
    if (!env.SIGNAL_URL) throw new Failure('SIGNAL_URL is not set (the signaling base URL, e.g. http://127.0.0.1:9001/)');
    SIGNAL_URL = withSlash(env.SIGNAL_URL);
    if (env.PAGES_URL) {
      PAGES_URL = withSlash(env.PAGES_URL);
    } else {
      server = await serveStatic();
      PAGES_URL = `http://127.0.0.1:${server.address().port}/`;
    }
    const result = await scenarios[scenario](ctx);
    const browsers = { callee: CALLEE_BROWSER, caller: CALLER_BROWSER };
    console.log(JSON.stringify({ scenario, ok: true, browsers, ...result, ms: Date.now() - t0 }));
    return 0;
  } catch (e) {
    for (const tab of tabs) {
      console.error(`---- ${tab.name} tab (${tab.kind}) log (last 60 lines) ----`);
      for (const l of tab.logs.slice(-60)) console.error(l);
    }
    const error = e instanceof Failure ? e.message : e.stack || String(e);
    console.error(`FAIL ${scenario}: ${error}`);
    console.log(JSON.stringify({ scenario, ok: false, error, ms: Date.now() - t0 }));
    return 1;
  } finally {
    await ctx.close().catch((e) => console.error('closing the browsers:', e.message));
    if (server) server.close();
  }
}

process.exitCode = await main();
