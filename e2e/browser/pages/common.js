// Shared logic of the PeerJS test pages (peerjs.html: the 1.5.x client, legacy.html: 0.3.x).
//
// Query parameters:
//   signal  base URL of the signaling server, path included, e.g. http://127.0.0.1:9001/
//   ice     URL of the ICE servers JSON (default: signal + "ice", relay's {path}ice)
//   key     PeerJS key (default "peerjs")
//   id      this page's peer id
//   call    the id to connect to once this page's peer is open (absent: only answer)
//   manual  "1": do not connect on open; the harness calls window.testConnect() later
//   turn    "udp", "tcp" or "tls": keep only the TURN URLs of that transport (tls: turns:)
//
// The page exposes window.testState and window.testPair() (the nominated candidate pair's
// local and remote candidate types) for run.mjs. The callee shows alert('Hello World!')
// when the caller's 'click' arrives over the data channel.
(function () {
  'use strict';
  const q = new URLSearchParams(location.search);
  const state = (window.testState = {
    generation: window.TEST_GENERATION,
    iceURLs: null,
    open: false,
    id: null,
    disconnected: false,
    connected: false,
    sent: false,
    received: [],
    errors: [],
  });
  let conn = null;

  function fail(where, e) {
    const msg = e && e.type ? e.type + ': ' + (e.message || e) : String((e && e.message) || e);
    state.errors.push(where + ': ' + msg);
    console.error('[test] ' + where + ':', msg);
  }
  window.addEventListener('error', (ev) => fail('window', ev.message));
  window.addEventListener('unhandledrejection', (ev) => fail('promise', ev.reason));

  // The pair the ICE agent chose: the candidate-pair stat that is nominated and
  // succeeded, or else the transport's selectedCandidatePairId.
  window.testPair = async function () {
    const pc = conn && window.TEST_PC_OF(conn);
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = pair || s;
    });
    if (!pair) {
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = pair || stats.get(s.selectedCandidatePairId);
      });
    }
    if (!pair || pair.state !== 'succeeded') return null;
    const l = stats.get(pair.localCandidateId) || {};
    const r = stats.get(pair.remoteCandidateId) || {};
    return {
      local: l.candidateType,
      remote: r.candidateType,
      localAddress: l.address + ':' + l.port,
      remoteAddress: r.address + ':' + r.port,
      relayProtocol: l.relayProtocol,
      url: l.url,
      bytesSent: pair.bytesSent,
      bytesReceived: pair.bytesReceived,
    };
  };

  function watch(c) {
    conn = c;
    c.on('open', () => {
      state.connected = true;
      if (q.get('call')) {
        c.send('click');
        state.sent = true;
      }
    });
    c.on('data', (d) => {
      state.received.push(typeof d === 'string' ? d : String(d));
      if (d === 'click') alert('Hello World!');
    });
    c.on('error', (e) => fail('connection', e));
    c.on('close', () => {
      state.connected = false;
    });
  }

  function turnTransport(u) {
    if (/^turns:/i.test(u)) return 'tls';
    return /transport=tcp/i.test(u) ? 'tcp' : 'udp';
  }

  async function main() {
    if (typeof Peer !== 'function') throw new Error('the PeerJS library did not load');
    const signal = new URL(q.get('signal'));
    const iceURL = q.get('ice') || new URL('ice', signal).href;
    const resp = await fetch(iceURL);
    if (!resp.ok) throw new Error('GET ' + iceURL + ': HTTP ' + resp.status);
    const ice = await resp.json();
    const only = q.get('turn');
    if (only) {
      ice.iceServers = ice.iceServers
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !/^turns?:/i.test(u) || turnTransport(u) === only) }))
        .filter((s) => s.urls.length);
    }
    state.iceURLs = ice.iceServers.flatMap((s) => [].concat(s.urls));
    const secure = signal.protocol === 'https:';
    const peer = new Peer(q.get('id'), {
      host: signal.hostname,
      port: Number(signal.port || (secure ? 443 : 80)),
      path: signal.pathname,
      key: q.get('key') || 'peerjs',
      secure,
      config: { iceServers: ice.iceServers, iceTransportPolicy: 'relay' },
      debug: 2,
    });
    window.testPeer = peer;
    window.testConnect = () => {
      if (conn) return false;
      watch(peer.connect(q.get('call'), { reliable: false }));
      return true;
    };
    peer.on('open', (id) => {
      state.open = true;
      state.id = id;
      if (q.get('call') && q.get('manual') !== '1') window.testConnect();
    });
    peer.on('connection', (c) => watch(c));
    peer.on('disconnected', () => {
      state.disconnected = true;
      state.open = false;
    });
    peer.on('close', () => {
      state.open = false;
    });
    peer.on('error', (e) => fail('peer', e));
  }

  main().catch((e) => fail('setup', e));
})();
