// peerproto.js: a small client for the PeerJS signaling protocol, shared by the
// relay pages. It speaks to the signaling server of the page's own origin:
//   GET  {path}{key}/id                a fresh id
//   GET  {path}ice                     the ICE servers (with short-lived TURN credentials)
//   WS   {path}peerjs?key=&id=&token=  OPEN / ERROR / ID-TAKEN, then relayed messages
//   POST {path}peerjs                  only after the socket closed before OPEN: why
// and builds its payloads the way the PeerJS 1.5.x client does, so the messages look
// like PeerJS on the wire. Plain script (no modules, no build step): it defines the
// global RelaySignal.
'use strict';

(function (global) {
  // The id pattern the PeerJS client enforces.
  const ID_PATTERN = /^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$/;
  const HEARTBEAT_MS = 5000;

  // randomToken returns a short random [a-z0-9] string, like PeerJS's token.
  function randomToken() {
    const bytes = new Uint8Array(8);
    global.crypto.getRandomValues(bytes);
    let s = '';
    for (const b of bytes) s += (b % 36).toString(36);
    return s;
  }

  // readConfig returns {path, key} from the page's <script type="application/json" id="config">.
  // The pages live at {path}demo and {path}diag, so the page's own directory is the
  // path; when they differ (a reverse proxy changed the prefix) the page's directory wins.
  function readConfig(doc) {
    doc = doc || global.document;
    const el = doc.getElementById('config');
    const cfg = JSON.parse(el.textContent);
    let path = String(cfg.path || '/');
    const here = global.location.pathname;
    const dir = here.slice(0, here.lastIndexOf('/') + 1);
    let decoded = dir;
    try {
      decoded = decodeURI(dir);
    } catch (e) {
      // keep the raw path
    }
    if (dir !== path && decoded !== path) path = dir;
    return {path: path, key: String(cfg.key || 'peerjs')};
  }

  // SignalError is an error with a kind: 'id-taken', 'server' (ERROR message),
  // 'closed', 'origin' (the server refused this page's origin), 'invalid-id', 'http'.
  class SignalError extends Error {
    constructor(kind, message) {
      super(message);
      this.name = 'SignalError';
      this.kind = kind;
    }
  }

  class RelaySignal {
    // options: {path, key, version}; path and key default to the page's config block.
    constructor(options) {
      options = options || {};
      const cfg = options.path === undefined ? readConfig() : {path: options.path, key: options.key};
      this.path = cfg.path;
      this.key = cfg.key || 'peerjs';
      this.version = options.version || 'relay-demo';
      this.id = null;
      this.token = randomToken();
      this.state = 'idle'; // idle | connecting | open | closed
      this.socket = null;
      this._handlers = {};
      this._heartbeat = null;
    }

    // url returns the absolute URL of a route under the signaling path.
    url(route) {
      return new URL(this.path + route, global.location.href);
    }

    // on registers a handler: 'open' (id), 'message' (msg: {type, src, dst, payload}),
    // 'error' (SignalError), 'close' ({code, reason}).
    on(event, fn) {
      (this._handlers[event] = this._handlers[event] || []).push(fn);
      return this;
    }

    _emit(event, arg) {
      for (const fn of this._handlers[event] || []) {
        try {
          fn(arg);
        } catch (e) {
          console.error('RelaySignal ' + event + ' handler:', e);
        }
      }
    }

    // fetchId asks the server for a fresh id.
    async fetchId() {
      const u = this.url(encodeURIComponent(this.key) + '/id');
      u.searchParams.set('ts', String(Date.now()) + Math.random());
      u.searchParams.set('version', this.version);
      const res = await global.fetch(u, {cache: 'no-store'});
      if (!res.ok) throw new SignalError('http', 'could not get an id from ' + u.pathname + ': HTTP ' + res.status);
      const id = (await res.text()).trim();
      if (!ID_PATTERN.test(id)) throw new SignalError('invalid-id', 'the server gave an unusable id: ' + JSON.stringify(id));
      return id;
    }

    // fetchIce returns the ICE config ({iceServers, ttl}) of the server: fetch it fresh
    // for each call, the TURN credentials in it are short-lived.
    async fetchIce() {
      const u = this.url('ice');
      let res;
      try {
        res = await global.fetch(u, {cache: 'no-store', credentials: 'same-origin'});
      } catch (e) {
        throw new SignalError('http', 'could not fetch ' + u.pathname + ': ' + e.message);
      }
      if (!res.ok) {
        let why = 'HTTP ' + res.status;
        if (res.status === 401) why += ' (the ICE endpoint wants an API token)';
        if (res.status === 403) why += ' (' + ((await errorOf(res)) || 'forbidden') + ')';
        if (res.status === 429) why += ' (too many requests, wait a minute)';
        throw new SignalError('http', 'could not fetch ' + u.pathname + ': ' + why);
      }
      const cfg = await res.json();
      if (!cfg || !Array.isArray(cfg.iceServers)) throw new SignalError('http', u.pathname + ' returned no iceServers');
      return cfg;
    }

    // refusal asks the server why a socket closed before it was open. Browsers hide
    // the HTTP answer to a WebSocket upgrade (the page sees only code 1006), but a
    // POST from the page carries the same Origin the socket did and is checked the
    // same way, and its answer can be read: 403 {"error": "origin not allowed"}. It
    // resolves to that error text, or null when the server names no reason.
    async refusal() {
      try {
        const res = await global.fetch(this.url('peerjs'), {method: 'POST', cache: 'no-store'});
        return res.status === 403 ? await errorOf(res) : null;
      } catch (e) {
        return null;
      }
    }

    // connect opens the WebSocket with id (or a fresh id from the server when id is
    // empty) and resolves with the id once the server says OPEN. It rejects with a
    // SignalError on ERROR, ID-TAKEN or a close before OPEN.
    async connect(id) {
      if (this.state === 'connecting' || this.state === 'open') throw new SignalError('state', 'already ' + this.state);
      id = (id || '').trim();
      if (id && !ID_PATTERN.test(id)) {
        throw new SignalError('invalid-id', 'invalid id ' + JSON.stringify(id) +
          ': use letters and digits, optionally joined by single spaces, "_" or "-"');
      }
      this.state = 'connecting';
      try {
        if (!id) id = await this.fetchId();
      } catch (e) {
        this.state = 'closed';
        throw e;
      }
      this.id = id;
      const u = this.url('peerjs');
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      u.searchParams.set('key', this.key);
      u.searchParams.set('id', id);
      u.searchParams.set('token', this.token);
      u.searchParams.set('version', this.version);

      return new Promise((resolve, reject) => {
        let settled = false;
        const fail = (err) => {
          if (!settled) {
            settled = true;
            reject(err);
          } else {
            this._emit('error', err);
          }
        };
        let ws;
        try {
          ws = new global.WebSocket(u.href);
        } catch (e) {
          this.state = 'closed';
          reject(new SignalError('closed', 'could not open ' + u.pathname + ': ' + e.message));
          return;
        }
        this.socket = ws;
        ws.onmessage = (ev) => {
          let msg;
          try {
            msg = JSON.parse(ev.data);
          } catch (e) {
            return; // not ours; ignore like PeerJS does
          }
          if (!msg || typeof msg.type !== 'string') return;
          switch (msg.type) {
            case 'OPEN':
              if (this.state !== 'connecting') return;
              this.state = 'open';
              this._startHeartbeat();
              settled = true;
              resolve(id);
              this._emit('open', id);
              return;
            case 'ID-TAKEN':
              fail(new SignalError('id-taken', 'the id ' + JSON.stringify(id) + ' is taken: someone else is connected with it'));
              return;
            case 'ERROR':
              fail(new SignalError('server', 'server error: ' + ((msg.payload && msg.payload.msg) || 'unknown')));
              return;
            default:
              if (this.state === 'open') this._emit('message', msg);
          }
        };
        ws.onclose = (ev) => {
          const was = this.state;
          this.state = 'closed';
          this._stopHeartbeat();
          if (this.socket === ws) this.socket = null;
          if (!settled) {
            settled = true;
            const closed = new SignalError('closed', 'the signaling server closed the connection before it was open' +
              (ev.code && ev.code !== 1000 && ev.code !== 1005 ? ' (code ' + ev.code + ')' : ''));
            if (ev.code !== 1006) {
              reject(closed);
            } else {
              // 1006: no close frame, as when the upgrade was refused. Ask why.
              this.refusal().then((why) => {
                if (why !== 'origin not allowed') {
                  reject(closed);
                  return;
                }
                reject(new SignalError('origin', 'origin not allowed: the signaling server refuses pages from ' +
                  global.location.origin + '; add it to [signal] allowed_origins in the server\'s config'));
              });
            }
          }
          if (was === 'open') this._emit('close', {code: ev.code, reason: ev.reason});
        };
        ws.onerror = () => {
          // A close event follows with the details we have; nothing more to say here.
        };
      });
    }

    // send sends {type, dst, payload} (dst and payload only when given). It returns
    // false when the socket is not open: PeerJS drops such messages too.
    send(type, dst, payload) {
      const ws = this.socket;
      if (!ws || ws.readyState !== 1) return false;
      const msg = {type: type};
      if (dst !== undefined && dst !== null) msg.dst = dst;
      if (payload !== undefined) msg.payload = payload;
      ws.send(JSON.stringify(msg));
      return true;
    }

    // close closes the socket; the server frees the id at once.
    close() {
      this._stopHeartbeat();
      if (this.socket) this.socket.close(1000, 'bye');
    }

    _startHeartbeat() {
      this._stopHeartbeat();
      this._heartbeat = global.setInterval(() => this.send('HEARTBEAT'), HEARTBEAT_MS);
    }

    _stopHeartbeat() {
      if (this._heartbeat !== null) global.clearInterval(this._heartbeat);
      this._heartbeat = null;
    }
  }

  // errorOf reads the "error" of a JSON error answer, or null.
  async function errorOf(res) {
    try {
      const body = await res.json();
      return body && typeof body.error === 'string' ? body.error : null;
    } catch (e) {
      return null;
    }
  }

  // Payload builders, with the shapes of the PeerJS 1.5.x client for data connections.
  const payloads = {
    // newConnectionId returns an id like PeerJS's "dc_" + token.
    newConnectionId: function () {
      return 'dc_' + randomToken();
    },
    offer: function (description, connectionId, options) {
      options = options || {};
      return {
        sdp: {type: description.type, sdp: description.sdp},
        type: 'data',
        connectionId: connectionId,
        label: options.label || connectionId,
        reliable: options.reliable !== false,
        serialization: options.serialization || 'raw',
      };
    },
    answer: function (description, connectionId) {
      return {sdp: {type: description.type, sdp: description.sdp}, type: 'data', connectionId: connectionId};
    },
    candidate: function (c, connectionId) {
      return {
        candidate: {
          candidate: c.candidate,
          sdpMid: c.sdpMid,
          sdpMLineIndex: c.sdpMLineIndex,
          usernameFragment: c.usernameFragment,
        },
        type: 'data',
        connectionId: connectionId,
      };
    },
  };

  global.RelaySignal = RelaySignal;
  global.RelaySignal.SignalError = SignalError;
  global.RelaySignal.payloads = payloads;
  global.RelaySignal.readConfig = readConfig;
  global.RelaySignal.ID_PATTERN = ID_PATTERN;
  global.RelaySignal.HEARTBEAT_MS = HEARTBEAT_MS;
})(typeof window !== 'undefined' ? window : globalThis);
