// Runs assets/peerproto.js in a node vm with a fake window (fetch, WebSocket,
// timers) and checks what it sends on the wire. Run by TestPeerprotoInNode:
//   node testdata/peerproto_check.js assets/peerproto.js
'use strict';

const assert = require('assert');
const fs = require('fs');
const vm = require('vm');

const source = fs.readFileSync(process.argv[2], 'utf8');

function makeWindow(opts) {
  const sockets = [];
  const fetches = [];
  const intervals = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(data) {
      assert.strictEqual(this.readyState, 1, 'send on a socket that is not open');
      this.sent.push(JSON.parse(data));
    }
    close(code) {
      this.readyState = 3;
      this.onclose({code: code || 1005, reason: ''});
    }
    // test helpers
    open() {
      this.readyState = 1;
    }
    receive(msg) {
      this.onmessage({data: typeof msg === 'string' ? msg : JSON.stringify(msg)});
    }
  }
  const configText = JSON.stringify({path: opts.path, key: opts.key});
  const win = {
    location: new URL(opts.href),
    document: {getElementById: (id) => (id === 'config' ? {textContent: configText} : null)},
    crypto: require('crypto').webcrypto,
    WebSocket: FakeWebSocket,
    // routes: pathname (GET) or "METHOD pathname" -> a 200 body, or {status, body}.
    fetch: async (u, init) => {
      const url = new URL(String(u));
      const method = (init && init.method) || 'GET';
      fetches.push(url);
      url.method = method;
      let route = opts.routes[method + ' ' + url.pathname];
      if (route === undefined && method === 'GET') route = opts.routes[url.pathname];
      if (route === undefined) route = {status: 404, body: 'nope'};
      if (typeof route === 'string') route = {status: 200, body: route};
      return {
        ok: route.status >= 200 && route.status < 300,
        status: route.status,
        text: async () => route.body,
        json: async () => JSON.parse(route.body),
      };
    },
    setInterval: (fn, ms) => {
      intervals.push({fn, ms, cleared: false});
      return intervals.length - 1;
    },
    clearInterval: (i) => {
      if (intervals[i]) intervals[i].cleared = true;
    },
    console: console,
    URL: URL,
    URLSearchParams: URLSearchParams,
  };
  win.window = win;
  vm.createContext(win);
  vm.runInContext(source, win, {filename: 'peerproto.js'});
  return {win, sockets, fetches, intervals};
}

const tick = () => new Promise((r) => setImmediate(r));

async function main() {
  // A fresh id from the server, then OPEN; heartbeat; relayed messages; payloads.
  {
    const t = makeWindow({
      href: 'https://relay.example.org:9001/sig/demo?call=x',
      path: '/sig/',
      key: 'k"ey',
      routes: {'/sig/k%22ey/id': 'abc-123\n', '/sig/ice': '{"iceServers":[{"urls":["stun:h:3478"]}],"ttl":60}'},
    });
    const s = new t.win.RelaySignal();
    assert.strictEqual(s.path, '/sig/');
    assert.strictEqual(s.key, 'k"ey');
    const opened = [];
    const messages = [];
    s.on('open', (id) => opened.push(id));
    s.on('message', (m) => messages.push(m));
    const p = s.connect('');
    await tick();
    assert.strictEqual(t.fetches[0].pathname, '/sig/k%22ey/id');
    assert.strictEqual(t.sockets.length, 1);
    const ws = t.sockets[0];
    const u = new URL(ws.url);
    assert.strictEqual(u.protocol, 'wss:');
    assert.strictEqual(u.host, 'relay.example.org:9001');
    assert.strictEqual(u.pathname, '/sig/peerjs');
    assert.strictEqual(u.searchParams.get('key'), 'k"ey');
    assert.strictEqual(u.searchParams.get('id'), 'abc-123');
    assert.match(u.searchParams.get('token'), /^[a-z0-9]{8}$/);
    assert.strictEqual(u.searchParams.get('version'), 'relay-demo');
    ws.open();
    ws.receive({type: 'OFFER', src: 'early', payload: {}}); // before OPEN: not delivered
    ws.receive({type: 'OPEN'});
    assert.strictEqual(await p, 'abc-123');
    assert.deepStrictEqual(opened, ['abc-123']);
    assert.strictEqual(s.state, 'open');
    assert.strictEqual(messages.length, 0);

    const hb = t.intervals.filter((i) => !i.cleared);
    assert.strictEqual(hb.length, 1);
    assert.strictEqual(hb[0].ms, 5000);
    hb[0].fn();
    assert.deepStrictEqual(ws.sent, [{type: 'HEARTBEAT'}]);

    ws.receive('not json');
    ws.receive({type: 'EXPIRE', src: 'bob', dst: 'abc-123'});
    assert.strictEqual(messages.length, 1);
    assert.strictEqual(messages[0].type, 'EXPIRE');
    assert.strictEqual(messages[0].src, 'bob');

    const P = t.win.RelaySignal.payloads;
    const cid = P.newConnectionId();
    assert.match(cid, /^dc_[a-z0-9]+$/);
    const offer = P.offer({type: 'offer', sdp: 'v=0\r\n', extra: 1}, cid, {reliable: true});
    assert.deepStrictEqual(JSON.parse(JSON.stringify(offer)), {
      sdp: {type: 'offer', sdp: 'v=0\r\n'}, type: 'data', connectionId: cid, label: cid, reliable: true, serialization: 'raw',
    });
    assert.ok(s.send('OFFER', 'bob', offer));
    assert.deepStrictEqual(ws.sent[1], {type: 'OFFER', dst: 'bob', payload: JSON.parse(JSON.stringify(offer))});
    assert.deepStrictEqual(JSON.parse(JSON.stringify(P.answer({type: 'answer', sdp: 's'}, cid))),
      {sdp: {type: 'answer', sdp: 's'}, type: 'data', connectionId: cid});
    const cand = P.candidate({candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'u', foo: 1}, cid);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(cand)), {
      candidate: {candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'u'},
      type: 'data', connectionId: cid,
    });

    const ice = await s.fetchIce();
    assert.deepStrictEqual(JSON.parse(JSON.stringify(ice.iceServers)), [{urls: ['stun:h:3478']}]);

    const closed = [];
    s.on('close', (ev) => closed.push(ev));
    ws.close(1006);
    assert.strictEqual(closed.length, 1);
    assert.strictEqual(s.state, 'closed');
    assert.ok(!s.send('HEARTBEAT'));
    assert.ok(t.intervals.every((i) => i.cleared), 'heartbeat stopped');
  }

  // ID-TAKEN and ERROR reject connect; an invalid id never reaches the server; plain http → ws:.
  {
    const t = makeWindow({href: 'http://localhost:9001/demo', path: '/', key: 'peerjs', routes: {}});
    const s = new t.win.RelaySignal();
    await assert.rejects(s.connect('bad id!'), (e) => e.kind === 'invalid-id');
    assert.strictEqual(t.sockets.length, 0);
    const p = s.connect('alice');
    await tick();
    const ws = t.sockets[0];
    assert.strictEqual(new URL(ws.url).protocol, 'ws:');
    assert.strictEqual(new URL(ws.url).pathname, '/peerjs');
    ws.open();
    ws.receive({type: 'ID-TAKEN', payload: {msg: 'ID is taken'}});
    ws.close(1000);
    await assert.rejects(p, (e) => e.kind === 'id-taken' && /alice/.test(e.message));

    const s2 = new t.win.RelaySignal();
    const p2 = s2.connect('bob');
    await tick();
    t.sockets[1].open();
    t.sockets[1].receive({type: 'ERROR', payload: {msg: 'Invalid key provided'}});
    await assert.rejects(p2, (e) => e.kind === 'server' && /Invalid key provided/.test(e.message));

    const s3 = new t.win.RelaySignal();
    const p3 = s3.connect('carol');
    await tick();
    t.sockets[2].close(1006);
    await assert.rejects(p3, (e) => e.kind === 'closed');

    await assert.rejects(s3.fetchIce(), (e) => /HTTP 404/.test(e.message));
    await assert.rejects(s3.fetchId(), (e) => /HTTP 404/.test(e.message));
  }

  // A socket refused for the page's origin closes with 1006 and nothing else; the
  // client asks the server why (a POST carries the Origin) and says so. Another 1006
  // stays a plain "closed", and so does one whose probe fails.
  {
    const t = makeWindow({
      href: 'https://app.example.org/sig/demo',
      path: '/sig/',
      key: 'peerjs',
      routes: {
        'POST /sig/peerjs': {status: 403, body: '{"error":"origin not allowed"}'},
        '/sig/ice': {status: 403, body: '{"error":"origin not allowed"}'},
      },
    });
    const s = new t.win.RelaySignal();
    const p = s.connect('dave');
    await tick();
    t.sockets[0].close(1006);
    await assert.rejects(p, (e) => {
      assert.strictEqual(e.kind, 'origin');
      assert.match(e.message, /^origin not allowed: .*https:\/\/app\.example\.org.*allowed_origins/);
      return true;
    });
    const probe = t.fetches[t.fetches.length - 1];
    assert.strictEqual(probe.method, 'POST');
    assert.strictEqual(probe.pathname, '/sig/peerjs');
    await assert.rejects(s.fetchIce(), (e) => /HTTP 403 \(origin not allowed\)/.test(e.message));

    const t2 = makeWindow({
      href: 'https://app.example.org/demo',
      path: '/',
      key: 'peerjs',
      routes: {'POST /peerjs': {status: 400, body: 'Bad Request'}},
    });
    const s2 = new t2.win.RelaySignal();
    const p2 = s2.connect('erin');
    await tick();
    t2.sockets[0].close(1006);
    await assert.rejects(p2, (e) => e.kind === 'closed' && /before it was open \(code 1006\)/.test(e.message));
    const s3 = new t2.win.RelaySignal();
    const p3 = s3.connect('fred');
    await tick();
    t2.sockets[1].close(1011); // a close frame came: the server said what it had to
    await assert.rejects(p3, (e) => e.kind === 'closed');
    assert.strictEqual(t2.fetches.filter((u) => u.method === 'POST').length, 1, 'probe only after a 1006');
  }

  // Behind a proxy that changed the prefix, the page's own directory is used.
  {
    const t = makeWindow({href: 'https://x.example/rtc/demo', path: '/', key: 'peerjs', routes: {}});
    const cfg = t.win.RelaySignal.readConfig();
    assert.strictEqual(cfg.path, '/rtc/');
    const t2 = makeWindow({href: 'https://x.example/a%22b/demo', path: '/a"b/', key: 'peerjs', routes: {}});
    assert.strictEqual(t2.win.RelaySignal.readConfig().path, '/a"b/');
  }

  console.log('peerproto: ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
