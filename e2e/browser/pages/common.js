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
//   bind    "1": ask for credentials bound to this page's signaling session ([signal]
//           bind_credentials): {ice}?peer=ID&token=T once the peer is open
//
// The page exposes window.testState and window.testPair() (the nominated candidate pair's
// local and remote candidate types) for run.mjs. The callee shows alert('Hello World!')
// when the caller's 'click' arrives over the data channel. window.testTicks(ms) sends
// "tick N" every ms over the data connection, and the other page counts them
// (testState.ticks, testState.lastTickAt); window.testDisconnect() closes the signaling
// socket and leaves the data connection be (PeerJS's peer.disconnect()).
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
    ticks: 0,
    lastTickAt: 0,
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
      if (typeof d === 'string' && d.startsWith('tick ')) {
        state.ticks++;
        state.lastTickAt = Date.now();
        return;
      }
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

  async function fetchICE(url) {
    const resp = await fetch(url);
    if (!resp.ok) throw new Error('GET ' + url + ': HTTP ' + resp.status);
    const ice = await resp.json();
    const only = q.get('turn');
    if (only) {
      ice.iceServers = ice.iceServers
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !/^turns?:/i.test(u) || turnTransport(u) === only) }))
        .filter((s) => s.urls.length);
    }
    state.iceURLs = ice.iceServers.flatMap((s) => [].concat(s.urls));
    return ice;
  }

  async function main() {
    if (typeof Peer !== 'function') throw new Error('the PeerJS library did not load');
    const signal = new URL(q.get('signal'));
    const iceURL = q.get('ice') || new URL('ice', signal).href;
    const bind = q.get('bind') === '1';
    // Bound credentials need the peer's id and token, so they come once it is open.
    const ice = bind ? { iceServers: [] } : await fetchICE(iceURL);
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
    window.testTicks = (ms) => {
      let n = 0;
      return setInterval(() => conn && conn.open && conn.send('tick ' + n++), ms);
    };
    window.testDisconnect = () => peer.disconnect();
    peer.on('open', async (id) => {
      if (bind) {
        // PeerJS makes each RTCPeerConnection from options.config when a call starts.
        const u = new URL(iceURL);
        u.searchParams.set('peer', id);
        u.searchParams.set('token', peer.options.token);
        try {
          peer.options.config.iceServers = (await fetchICE(u.href)).iceServers;
        } catch (e) {
          fail('bound credentials', e);
          return;
        }
      }
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
