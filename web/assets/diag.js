// diag.js: "is my TURN server reachable from here?". Fetches the ICE config, then
// for each TURN URL in it gathers candidates with that URL alone (plus the STUN
// servers) and reports srflx and relay candidates, timings and TURN errors.
//
// window.relayDiag = {done, running, verdict, error, stun: [urls],
//   results: [{transport: 'udp'|'tcp'|'tls', url, srflx, srflxAddress, relay, relayAddress,
//              ms, errors: ['401 Unauthorized', ...], errorCodes: [401], timedOut, elapsed}]}
'use strict';

(function () {
  const GATHER_MS = 10000;
  const $ = (id) => document.getElementById(id);
  const el = {verdict: $('verdict'), run: $('run'), results: $('results')};
  const tbody = el.results.tBodies[0];

  const diag = {done: false, running: false, verdict: '', error: null, stun: [], results: []};
  window.relayDiag = diag;

  const signal = new window.RelaySignal(); // only for its ICE fetch: no socket is opened

  function transportOf(url) {
    if (/^turns:/i.test(url)) return 'tls';
    if (/[?&]transport=tcp/i.test(url)) return 'tcp';
    return 'udp';
  }

  // parseCandidate returns {type, address, port} of an RTCIceCandidate, from its
  // fields when the browser has them, else from the candidate line.
  function parseCandidate(c) {
    const parts = String(c.candidate || '').split(/\s+/);
    const typ = parts.indexOf('typ');
    return {
      type: c.type || (typ > 0 ? parts[typ + 1] : ''),
      address: c.address || parts[4] || '?',
      port: c.port || parts[5] || '?',
    };
  }

  function hostPort(a, p) {
    return (String(a).indexOf(':') >= 0 ? '[' + a + ']' : a) + ':' + p;
  }

  function names(list) {
    const up = list.map((t) => t.toUpperCase());
    if (up.length <= 1) return up.join('');
    return up.slice(0, -1).join(', ') + ' and ' + up[up.length - 1];
  }

  // ---- one gathering ----

  function gather(stunUrls, server, url, result, changed) {
    const iceServers = [];
    if (stunUrls.length) iceServers.push({urls: stunUrls});
    iceServers.push({urls: [url], username: server.username, credential: server.credential});
    let pc;
    try {
      pc = new RTCPeerConnection({iceServers: iceServers});
    } catch (e) {
      addError(result, 'cannot use this URL: ' + e.message);
      return Promise.resolve(result);
    }
    pc.createDataChannel('diag');
    return new Promise((resolve) => {
      const t0 = performance.now();
      let finished = false;
      const finish = (timedOut) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        result.timedOut = timedOut;
        result.elapsed = Math.round(performance.now() - t0);
        pc.onicecandidate = pc.onicegatheringstatechange = pc.onicecandidateerror = null;
        pc.close();
        resolve(result);
      };
      const timer = setTimeout(() => finish(true), GATHER_MS);
      pc.onicecandidate = (ev) => {
        if (!ev.candidate || !ev.candidate.candidate) {
          if (!ev.candidate) finish(false);
          return;
        }
        const c = parseCandidate(ev.candidate);
        if (c.type === 'srflx' && !result.srflx) {
          result.srflx = true;
          result.srflxAddress = hostPort(c.address, c.port);
        } else if (c.type === 'relay' && !result.relay) {
          result.relay = true;
          result.relayAddress = hostPort(c.address, c.port);
          result.ms = Math.round(performance.now() - t0);
        } else {
          return;
        }
        changed();
      };
      pc.onicegatheringstatechange = () => {
        if (pc.iceGatheringState === 'complete') finish(false);
      };
      pc.onicecandidateerror = (ev) => {
        const from = ev.url && ev.url !== url ? ' from ' + ev.url : '';
        const text = String(ev.errorText || '').replace(/\.+$/, '');
        if (addError(result, ev.errorCode + (text ? ' ' + text : '') + from, ev.errorCode)) changed();
      };
      pc.createOffer()
        .then((offer) => pc.setLocalDescription(offer))
        .catch((e) => {
          addError(result, e.message);
          finish(false);
        });
    });
  }

  // addError records an error once; it reports whether it was new.
  function addError(result, text, code) {
    if (result.errors.indexOf(text) >= 0) return false;
    result.errors.push(text);
    if (typeof code === 'number' && result.errorCodes.indexOf(code) < 0) result.errorCodes.push(code);
    return true;
  }

  // ---- the table and the verdict ----

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
    return td;
  }

  function render() {
    const rows = [];
    for (const r of diag.results) {
      const tr = document.createElement('tr');
      tr.dataset.transport = r.transport;
      cell(tr, r.transport.toUpperCase());
      cell(tr, r.url, 'url');
      const pending = !r.finished;
      cell(tr, r.srflx ? 'yes, ' + r.srflxAddress : pending ? '…' : 'no', r.srflx ? 'yes' : pending ? '' : 'no');
      cell(tr, r.relay ? 'yes, ' + r.relayAddress : pending ? '…' : 'no', r.relay ? 'yes' : pending ? '' : 'no');
      cell(tr, r.ms !== null ? r.ms + ' ms' : pending ? '…' : '-');
      const errs = r.errors.slice();
      if (r.finished && !r.relay && r.timedOut && !errs.length) errs.push('no answer within ' + GATHER_MS / 1000 + ' s');
      cell(tr, errs.join('; ') || (pending ? '' : 'none'), errs.length ? 'errors' : '');
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  function reason(r) {
    if (r.errors.length) return r.errors[0];
    if (r.timedOut) return 'no answer within ' + GATHER_MS / 1000 + ' s';
    return 'gathering ended without one';
  }

  function verdict(results) {
    if (!results.length) {
      return {ok: false, text: 'The ICE endpoint lists no TURN server: nothing to test' +
        (diag.stun.length ? ' (STUN only: ' + diag.stun.join(', ') + ')' : '') + '.'};
    }
    const count = {};
    for (const r of results) count[r.transport] = (count[r.transport] || 0) + 1;
    const label = (r) => r.transport.toUpperCase() + (count[r.transport] > 1 ? ' (' + r.url + ')' : '');
    const good = [...new Set(results.filter((r) => r.relay).map((r) => r.transport))];
    const bad = results.filter((r) => !r.relay);
    if (!bad.length) return {ok: true, text: 'TURN reachable over ' + names(good) + '.'};
    const misses = bad.map((r) => 'no relay candidate over ' + label(r) + ': ' + reason(r)).join('; ');
    if (!good.length) return {ok: false, text: 'TURN not reachable from here: ' + misses + '.'};
    return {ok: false, partial: true, text: 'TURN reachable over ' + names(good) + '; ' + misses + '.'};
  }

  function setVerdict(text, cls) {
    diag.verdict = text;
    el.verdict.textContent = text;
    el.verdict.className = 'verdict' + (cls ? ' ' + cls : '');
  }

  // ---- a run ----

  async function run() {
    if (diag.running) return;
    diag.running = true;
    diag.done = false;
    diag.error = null;
    diag.results = [];
    el.run.disabled = true;
    render();
    setVerdict('Fetching the ICE servers…');
    try {
      const ice = await signal.fetchIce();
      const stun = [];
      const tests = [];
      for (const s of ice.iceServers) {
        for (const u of [].concat(s.urls || [])) {
          if (/^stuns?:/i.test(u)) stun.push(u);
          else if (/^turns?:/i.test(u)) tests.push({server: s, url: u});
        }
      }
      diag.stun = stun;
      diag.results = tests.map((t) => ({
        transport: transportOf(t.url), url: t.url,
        srflx: false, srflxAddress: null, relay: false, relayAddress: null,
        ms: null, errors: [], errorCodes: [], timedOut: false, elapsed: null, finished: false,
      }));
      render();
      if (tests.length) setVerdict('Gathering candidates through ' + tests.length + ' TURN URL' + (tests.length > 1 ? 's' : '') + ' (at most ' + GATHER_MS / 1000 + ' s)…');
      await Promise.all(tests.map((t, i) => gather(stun, t.server, t.url, diag.results[i], render).then((r) => {
        r.finished = true;
        render();
      })));
      const v = verdict(diag.results);
      setVerdict(v.text, v.ok ? 'ok' : v.partial ? 'warn' : 'error');
    } catch (e) {
      diag.error = e.message;
      setVerdict(e.message, 'error');
    }
    diag.running = false;
    diag.done = true;
    el.run.disabled = false;
  }

  el.run.addEventListener('click', run);
  run();
})();
