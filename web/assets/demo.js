// demo.js: the click → "Hello World!" demo. Two tabs connect to the signaling
// server, one calls the other, a WebRTC data channel opens (direct or through the
// TURN relay), and a click on one page shows alert('Hello World!') on the other.
//
// window.relayDemo is kept up to date for people and tests:
//   state: 'idle' | 'connecting' | 'open' | 'calling' | 'answering' | 'connected' | 'error' | 'closed'
//   myId, peerId, pairType: {local, remote} | null, relayProtocol, path, lastError,
//   clicksSent, clicksReceived, chat: [{from: 'me'|'them', text}]
'use strict';

(function () {
  const RelaySignal = window.RelaySignal;
  const payloads = RelaySignal.payloads;
  const CALL_TIMEOUT_MS = 30000;
  const STATS_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const el = {
    connectForm: $('connect-form'),
    myId: $('my-id'),
    myIdShown: $('my-id-shown'),
    connect: $('connect'),
    callForm: $('call-form'),
    peerId: $('peer-id'),
    call: $('call'),
    relayOnly: $('relay-only'),
    status: $('status'),
    path: $('path'),
    chatLog: $('chat-log'),
    chatForm: $('chat-form'),
    chatInput: $('chat-input'),
    chatSend: $('chat-send'),
  };

  const demo = {
    state: 'idle',
    myId: null,
    peerId: null,
    pairType: null,
    relayProtocol: null,
    path: null,
    lastError: null,
    clicksSent: 0,
    clicksReceived: 0,
    chat: [],
  };
  window.relayDemo = demo;

  let signal = null; // the RelaySignal once connecting
  let call = null; // the current call, see newCall
  let autoCall = false; // ?call=OTHER: call once open

  // ---- status line ----

  function setState(state) {
    demo.state = state;
    document.body.dataset.state = state;
  }

  function info(text) {
    el.status.textContent = text;
    el.status.className = 'status';
  }

  function ok(text) {
    el.status.textContent = text;
    el.status.className = 'status ok';
  }

  function fail(text) {
    demo.lastError = text;
    el.status.textContent = text;
    el.status.className = 'status error';
  }

  function setPath(text, detail) {
    demo.path = text;
    el.path.textContent = text || 'no connection';
    el.path.title = detail || '';
  }

  // ---- signaling connection ----

  async function connect() {
    if (signal && (signal.state === 'connecting' || signal.state === 'open')) return;
    demo.lastError = null;
    setState('connecting');
    info('Connecting to the signaling server…');
    el.connect.disabled = true;
    el.myId.disabled = true;
    const s = new RelaySignal();
    signal = s;
    s.on('message', onSignal);
    s.on('close', (ev) => onSignalClosed(s, ev));
    let id;
    try {
      id = await s.connect(el.myId.value);
    } catch (e) {
      if (signal === s) signal = null;
      setState('error');
      fail(e.message);
      el.connect.disabled = false;
      el.myId.disabled = false;
      return;
    }
    demo.myId = id;
    el.myId.value = id;
    el.myIdShown.textContent = id;
    el.call.disabled = false;
    if (!call) setState('open');
    ok('Connected as "' + id + '". Call the other tab\'s id, or wait for its call.');
    if (autoCall) {
      autoCall = false;
      startCall(el.peerId.value);
    }
  }

  function onSignalClosed(s, ev) {
    if (signal !== s) return;
    signal = null;
    el.connect.disabled = false;
    el.myId.disabled = false;
    el.call.disabled = true;
    el.myIdShown.textContent = 'not connected';
    const why = 'The signaling connection closed' + (ev && ev.code && ev.code !== 1000 && ev.code !== 1005 ? ' (code ' + ev.code + ')' : '');
    if (call && demo.state === 'connected') {
      fail(why + '; the data channel still works, Connect again to take calls.');
      return;
    }
    if (call) endCall(call);
    setState('closed');
    fail(why + '. Press Connect to connect again.');
  }

  function onSignal(msg) {
    switch (msg.type) {
      case 'OFFER':
        onOffer(msg);
        break;
      case 'ANSWER':
        onAnswer(msg);
        break;
      case 'CANDIDATE':
        onCandidate(msg);
        break;
      case 'LEAVE':
        if (call && msg.src === call.peer) {
          const peer = call.peer;
          endCall(call);
          info('"' + peer + '" left.');
        }
        break;
      case 'EXPIRE':
        if (!msg.src) break;
        // Connected already: a late candidate expired, the data channel is fine.
        if (call && msg.src === call.peer && demo.state === 'connected') break;
        if (call && msg.src === call.peer) endCall(call);
        fail('Call failed: nobody with id ' + msg.src + ' is connected.');
        break;
    }
  }

  // ---- calls ----

  function newCall(peer, connectionId, role) {
    endCall(call);
    const c = {
      peer: peer,
      connectionId: connectionId,
      role: role, // 'caller' | 'callee'
      pc: null,
      dc: null,
      relayOnly: el.relayOnly.checked,
      serialization: 'raw', // how the data channel's messages are encoded (PeerJS serialization)
      signalled: false, // OFFER/ANSWER sent: our candidates may follow
      outgoing: [], // our candidates waiting for the OFFER/ANSWER to go first
      incoming: [], // their candidates waiting for the remote description
      turnErrors: [],
      localCandidates: 0,
      timer: null,
      statsTimer: null,
    };
    call = c;
    demo.peerId = peer;
    demo.lastError = null;
    c.timer = setTimeout(() => {
      if (call === c && demo.state !== 'connected') {
        endCall(c);
        fail('No connection to "' + peer + '" after ' + CALL_TIMEOUT_MS / 1000 + ' s' + iceHint(c));
      }
    }, CALL_TIMEOUT_MS);
    return c;
  }

  // endCall closes c if it is the current call and returns the page to 'open' (or 'closed').
  function endCall(c) {
    if (!c || call !== c) return;
    call = null;
    clearTimeout(c.timer);
    clearInterval(c.statsTimer);
    if (c.dc) {
      c.dc.onopen = c.dc.onclose = c.dc.onmessage = null;
      try {
        c.dc.close();
      } catch (e) {
        // already closed
      }
    }
    if (c.pc) {
      c.pc.onicecandidate = c.pc.oniceconnectionstatechange = c.pc.onconnectionstatechange = null;
      c.pc.ondatachannel = c.pc.onicecandidateerror = c.pc.onicegatheringstatechange = null;
      try {
        c.pc.close();
      } catch (e) {
        // already closed
      }
    }
    demo.peerId = null;
    demo.pairType = null;
    demo.relayProtocol = null;
    setPath(null);
    setChatEnabled(false);
    setState(signal && signal.state === 'open' ? 'open' : demo.myId ? 'closed' : 'idle');
  }

  function iceHint(c) {
    let s = c.relayOnly ? ' through the TURN relay' : '';
    const errs = c.turnErrors.filter((e) => e.errorCode !== 701 || c.relayOnly);
    if (errs.length) {
      const e = errs[0];
      s += ' (TURN error ' + e.errorCode + (e.errorText ? ' ' + e.errorText : '') + (e.url ? ' from ' + e.url : '') + ')';
    }
    return s + '. Check the TURN server on the diagnostics page.';
  }

  // makePeerConnection fetches a fresh ICE config and creates c.pc with it.
  async function makePeerConnection(c) {
    const ice = await signal.fetchIce();
    const config = {iceServers: ice.iceServers};
    if (c.relayOnly) {
      const hasTurn = ice.iceServers.some((s) => [].concat(s.urls || []).some((u) => /^turns?:/i.test(u)));
      if (!hasTurn) throw new Error('"Relay only" is on, but the ICE endpoint lists no TURN server');
      config.iceTransportPolicy = 'relay';
    }
    const pc = new RTCPeerConnection(config);
    c.pc = pc;
    pc.onicecandidate = (ev) => {
      if (call !== c || !ev.candidate || !ev.candidate.candidate) return;
      c.localCandidates++;
      const p = payloads.candidate(ev.candidate, c.connectionId);
      if (c.signalled) signal && signal.send('CANDIDATE', c.peer, p);
      else c.outgoing.push(p);
    };
    pc.onicecandidateerror = (ev) => {
      c.turnErrors.push({errorCode: ev.errorCode, errorText: String(ev.errorText || '').replace(/\.+$/, ''), url: ev.url});
    };
    const watch = () => {
      if (call !== c) return;
      const s = pc.connectionState === 'failed' ? 'failed' : pc.iceConnectionState;
      if (s === 'failed') {
        const peer = c.peer;
        const was = demo.state;
        endCall(c);
        if (was === 'connected') fail('Lost the connection to "' + peer + '" (ICE failed).');
        else fail('ICE failed: no working path to "' + peer + '"' + iceHint(c));
      } else if (s === 'disconnected' && demo.state === 'connected') {
        info('The connection to "' + c.peer + '" is interrupted; waiting for it to come back…');
      } else if (s === 'connected' && demo.state === 'connected') {
        ok('Connected to "' + c.peer + '". Click anywhere on the page to send "click".');
      }
    };
    pc.onicegatheringstatechange = () => {
      // Nothing to offer the other side (e.g. relay only and the TURN server refused us):
      // ICE cannot succeed, say so now rather than at the call timeout.
      if (call === c && pc.iceGatheringState === 'complete' && c.localCandidates === 0) {
        const peer = c.peer;
        endCall(c);
        fail('ICE failed: this browser found no usable candidate to reach "' + peer + '"' + iceHint(c));
      }
    };
    pc.oniceconnectionstatechange = watch;
    pc.onconnectionstatechange = watch;
    return pc;
  }

  // signalled marks the OFFER/ANSWER as sent and sends the candidates held back.
  function signalled(c) {
    c.signalled = true;
    for (const p of c.outgoing) signal && signal.send('CANDIDATE', c.peer, p);
    c.outgoing = [];
  }

  async function addRemoteCandidates(c) {
    const list = c.incoming;
    c.incoming = [];
    for (const cand of list) {
      try {
        await c.pc.addIceCandidate(cand);
      } catch (e) {
        console.warn('addIceCandidate:', e);
      }
    }
  }

  function checkPeerId(peer) {
    if (!peer) return 'Type the other tab\'s id first.';
    if (peer === demo.myId) return 'That is your own id: call the other tab\'s id.';
    if (!RelaySignal.ID_PATTERN.test(peer)) return 'Invalid id "' + peer + '".';
    return null;
  }

  async function startCall(peer) {
    peer = (peer || '').trim();
    const bad = checkPeerId(peer);
    if (bad) {
      fail(bad);
      return;
    }
    if (!signal || signal.state !== 'open') {
      fail('Connect first.');
      return;
    }
    const c = newCall(peer, payloads.newConnectionId(), 'caller');
    setState('calling');
    info('Calling "' + peer + '"…');
    try {
      const pc = await makePeerConnection(c);
      if (call !== c) return;
      c.dc = pc.createDataChannel(c.connectionId, {ordered: true});
      wireChannel(c, c.dc);
      await pc.setLocalDescription(await pc.createOffer());
      if (call !== c) return;
      signal.send('OFFER', peer, payloads.offer(pc.localDescription, c.connectionId,
        {label: c.connectionId, reliable: true, serialization: 'raw'}));
      signalled(c);
    } catch (e) {
      if (call !== c) return;
      endCall(c);
      fail('Call failed: ' + e.message);
    }
  }

  async function onOffer(msg) {
    const p = msg.payload || {};
    if (!msg.src || !p.connectionId || !p.sdp) return;
    if (p.type && p.type !== 'data') {
      info('Ignored a media call from "' + msg.src + '": this demo does data connections only.');
      return;
    }
    if (call && call.peer === msg.src && call.connectionId === p.connectionId) return;
    const c = newCall(msg.src, p.connectionId, 'callee');
    c.serialization = p.serialization || 'binary'; // PeerJS's default
    el.peerId.value = msg.src;
    setState('answering');
    info('Call from "' + msg.src + '", answering…');
    if (c.serialization !== 'raw' && c.serialization !== 'json') {
      console.warn('"' + msg.src + '" uses PeerJS serialization "' + c.serialization +
        '": this demo reads "raw" and "json" (connect with {serialization: \'raw\'})');
    }
    try {
      const pc = await makePeerConnection(c);
      if (call !== c) return;
      pc.ondatachannel = (ev) => {
        if (call !== c) return;
        c.dc = ev.channel;
        wireChannel(c, ev.channel);
      };
      await pc.setRemoteDescription(p.sdp);
      await addRemoteCandidates(c);
      await pc.setLocalDescription(await pc.createAnswer());
      if (call !== c) return;
      signal.send('ANSWER', c.peer, payloads.answer(pc.localDescription, c.connectionId));
      signalled(c);
    } catch (e) {
      if (call !== c) return;
      endCall(c);
      fail('Could not answer "' + msg.src + '": ' + e.message);
    }
  }

  async function onAnswer(msg) {
    const c = call;
    const p = msg.payload || {};
    if (!c || c.role !== 'caller' || msg.src !== c.peer || p.connectionId !== c.connectionId || !p.sdp) return;
    if (!c.pc || c.pc.remoteDescription) return;
    try {
      await c.pc.setRemoteDescription(p.sdp);
      await addRemoteCandidates(c);
      if (call === c && demo.state !== 'connected') info('"' + c.peer + '" answered, connecting…');
    } catch (e) {
      if (call !== c) return;
      endCall(c);
      fail('Bad answer from "' + msg.src + '": ' + e.message);
    }
  }

  function onCandidate(msg) {
    const c = call;
    const p = msg.payload || {};
    if (!c || msg.src !== c.peer || p.connectionId !== c.connectionId || !p.candidate) return;
    if (c.pc && c.pc.remoteDescription) {
      c.pc.addIceCandidate(p.candidate).catch((e) => console.warn('addIceCandidate:', e));
    } else if (c.incoming.length < 200) {
      c.incoming.push(p.candidate);
    }
  }

  // ---- the data channel ----

  function wireChannel(c, dc) {
    dc.binaryType = 'arraybuffer';
    dc.onopen = () => {
      if (call !== c) return;
      clearTimeout(c.timer);
      setState('connected');
      demo.lastError = null;
      ok('Connected to "' + c.peer + '". Click anywhere on the page to send "click".');
      setChatEnabled(true);
      refreshPath(c);
      c.statsTimer = setInterval(() => refreshPath(c), STATS_MS);
    };
    dc.onclose = () => {
      if (call !== c) return;
      const peer = c.peer;
      endCall(c);
      info('The connection to "' + peer + '" closed.');
    };
    dc.onmessage = (ev) => onData(c, ev.data);
  }

  // encode and onData follow the connection's PeerJS serialization: "raw" sends
  // strings as they are; "json" (PeerJS 1.5) sends the UTF-8 bytes of JSON text.
  function encode(c, value) {
    if (c.serialization === 'json') return new TextEncoder().encode(JSON.stringify(value));
    return typeof value === 'string' ? value : JSON.stringify(value);
  }

  function onData(c, data) {
    if (c.serialization === 'json') {
      try {
        const text = typeof data === 'string' ? data : new TextDecoder().decode(data);
        const v = JSON.parse(text);
        data = typeof v === 'string' ? v : JSON.stringify(v);
      } catch (e) {
        // not JSON after all: take it as it is
      }
    }
    if (typeof data !== 'string') {
      addChat('them', '(binary data: this demo reads PeerJS "raw" or "json" serialization only)');
      return;
    }
    if (data === 'click') {
      demo.clicksReceived++;
      alert('Hello World!');
      return;
    }
    let text = data;
    if (data.charAt(0) === '{') {
      try {
        const m = JSON.parse(data);
        if (m && typeof m.chat === 'string') text = m.chat;
      } catch (e) {
        // plain text that starts with "{"
      }
    }
    addChat('them', text);
  }

  function channelOpen() {
    return call && call.dc && call.dc.readyState === 'open';
  }

  function sendClick() {
    if (!channelOpen()) return;
    call.dc.send(encode(call, 'click'));
    demo.clicksSent++;
  }

  function sendChat() {
    const text = el.chatInput.value;
    if (!text.trim() || !channelOpen()) return;
    call.dc.send(encode(call, {chat: text}));
    el.chatInput.value = '';
    addChat('me', text);
  }

  function addChat(from, text) {
    demo.chat.push({from: from, text: text});
    const li = document.createElement('li');
    li.className = from;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = from === 'me' ? 'me' : (demo.peerId || 'them');
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    li.append(who, body);
    el.chatLog.append(li);
    while (el.chatLog.childElementCount > 200) el.chatLog.firstElementChild.remove();
    el.chatLog.scrollTop = el.chatLog.scrollHeight;
  }

  function setChatEnabled(on) {
    el.chatInput.disabled = !on;
    el.chatSend.disabled = !on;
  }

  // ---- how the data flows ----

  // selectedPair returns the candidate pair in use from an RTCStatsReport, or null.
  function selectedPair(stats) {
    let pair = null;
    stats.forEach((r) => {
      if (!pair && r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId) || null;
    });
    if (pair) return pair;
    stats.forEach((r) => {
      if (!pair && r.type === 'candidate-pair' && (r.selected || (r.nominated && r.state === 'succeeded'))) pair = r;
    });
    return pair;
  }

  // relayProtocol returns 'udp', 'tcp' or 'tls': how the browser reaches the TURN server.
  function relayProtocol(local) {
    if (local.relayProtocol) return String(local.relayProtocol).toLowerCase();
    const url = String(local.url || '');
    if (/^turns:/i.test(url)) return 'tls';
    if (/transport=tcp/i.test(url)) return 'tcp';
    if (/^turn:/i.test(url)) return 'udp';
    return 'unknown';
  }

  async function refreshPath(c) {
    if (call !== c || !c.pc) return;
    let stats;
    try {
      stats = await c.pc.getStats();
    } catch (e) {
      return;
    }
    if (call !== c) return;
    const pair = selectedPair(stats);
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    if (!local || !remote) {
      demo.pairType = null;
      setPath('connected, path not known yet');
      return;
    }
    const lt = local.candidateType;
    const rt = remote.candidateType;
    demo.pairType = {local: lt, remote: rt};
    demo.relayProtocol = lt === 'relay' ? relayProtocol(local) : null;
    let text;
    if (lt === 'relay') text = 'through the TURN relay (' + demo.relayProtocol + ')';
    else if (rt === 'relay') text = 'through the TURN relay (the other side\'s)';
    else if (lt === 'srflx' || lt === 'prflx' || rt === 'srflx') text = 'direct (srflx)';
    else text = 'direct (host)';
    const addr = (x) => (x.address || x.ip || '?') + ':' + x.port;
    setPath(text, 'local ' + lt + ' ' + addr(local) + ' (' + (local.protocol || '?') + ') ↔ remote ' + rt + ' ' + addr(remote));
  }

  // ---- wiring ----

  el.connectForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    connect();
  });
  el.callForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    startCall(el.peerId.value);
  });
  el.chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendChat();
  });
  document.addEventListener('click', (ev) => {
    const t = ev.target;
    if (t && t.closest && t.closest('input, button, select, textarea, label, a, form')) return;
    sendClick();
  });
  // Leaving the page: tell the other side at once (the server relays LEAVE), then
  // free our id.
  window.addEventListener('pagehide', () => {
    if (call && signal) signal.send('LEAVE', call.peer);
    endCall(call);
    if (signal) signal.close();
  });

  const q = new URLSearchParams(location.search);
  el.relayOnly.checked = q.get('relay') === '1' || q.get('relay') === 'true';
  if (q.has('id')) el.myId.value = q.get('id');
  if (q.has('call')) el.peerId.value = q.get('call');
  autoCall = !!(q.get('call') || '').trim();
  setState('idle');
  if (q.has('id') || autoCall) connect();
})();
