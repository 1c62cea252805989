//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The signaling generator: PeerJS 1.x clients as the server sees them. Each peer is one
// WebSocket (ws://host/peerjs?key=peerjs&id=..&token=..&version=1.5.5) that waits for
// OPEN, sends HEARTBEAT every 5 s, and in the load phase sends OFFER-sized messages to
// its partner with a send timestamp in the payload; the partner's reader measures the
// delivery latency. Every peer has a reader goroutine (as a browser tab has), which
// also answers relay's WebSocket pings.

type wsPeer struct {
	id      string
	partner string
	url     string // the server this peer connects to (a fleet spreads peers over nodes)
	conn    *websocket.Conn
	dead    atomic.Bool
}

type signalGen struct {
	url string // ws://127.0.0.1:port/peerjs?key=peerjs (wss:// over TLS)
	// urls, when set (a fleet), replaces url: peer i connects to urls[i%len(urls)], so
	// with two nodes the partners 2k and 2k+1 sit on different nodes.
	urls []string
	// apart: a process whose CPU is measured over the window but not counted as the
	// server's (the fleet's Redis).
	apart  *server
	dialer websocket.Dialer
	base   time.Time

	wStart, wEnd atomic.Int64 // µs since base; messages sent inside are counted
	hist         histogram
	recvWin      atomic.Uint64
	recvAll      atomic.Uint64
	readersDone  sync.WaitGroup
	closedEarly  atomic.Int64
}

func newSignalGen(srv *server) *signalGen {
	g := &signalGen{url: srv.signalURL("ws") + "/peerjs?key=peerjs", dialer: dialer, base: time.Now()}
	g.dialer.TLSClientConfig = srv.clientTLS
	g.wStart.Store(1 << 62)
	g.wEnd.Store(1 << 62)
	return g
}

func (g *signalGen) nowUS() int64 { return int64(time.Since(g.base) / time.Microsecond) }

var dialer = websocket.Dialer{
	HandshakeTimeout: 10 * time.Second,
	ReadBufferSize:   2048,
	WriteBufferSize:  2048,
}

// connect opens n peers, conc at a time, each registered (OPEN received) before it
// counts. Peers 2k and 2k+1 are partners.
func (g *signalGen) connect(prefix string, n, conc int) ([]*wsPeer, error) {
	peers := make([]*wsPeer, n)
	for i := range peers {
		peers[i] = &wsPeer{id: fmt.Sprintf("%s%d", prefix, i), partner: fmt.Sprintf("%s%d", prefix, i^1), url: g.url}
		if len(g.urls) > 0 {
			peers[i].url = g.urls[i%len(g.urls)]
		}
	}
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if firstErr.Load() != nil {
					return
				}
				if err := g.open(peers[i]); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("peer %d of %d: %w", i, n, err))
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		closePeers(peers)
		return nil, err
	}
	return peers, nil
}

func (g *signalGen) open(p *wsPeer) error {
	u := p.url + "&id=" + p.id + "&token=t" + p.id + "&version=1.5.5"
	c, resp, err := g.dialer.Dial(u, nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return fmt.Errorf("waiting for OPEN: %w", err)
	}
	if !bytes.Contains(msg, []byte(`"OPEN"`)) {
		c.Close()
		return fmt.Errorf("expected OPEN, got %s", msg)
	}
	_ = c.SetReadDeadline(time.Time{})
	p.conn = c
	g.readersDone.Add(1)
	go g.read(p)
	return nil
}

// read consumes everything the server sends this peer, into one reused buffer, and
// accounts the OFFERs whose send time falls inside the window.
func (g *signalGen) read(p *wsPeer) {
	defer g.readersDone.Done()
	buf := make([]byte, 4096)
	for {
		_, r, err := p.conn.NextReader()
		if err != nil {
			if !p.dead.Load() {
				g.closedEarly.Add(1)
			}
			p.dead.Store(true)
			return
		}
		n := 0
		for {
			k, err := r.Read(buf[n:])
			n += k
			if err != nil || n == len(buf) {
				if err == nil {
					_, _ = io.Copy(io.Discard, r)
				}
				break
			}
		}
		ts := findTS(buf[:n])
		if ts <= 0 {
			continue
		}
		now := g.nowUS()
		g.recvAll.Add(1)
		if ts >= g.wStart.Load() && ts < g.wEnd.Load() {
			g.recvWin.Add(1)
			g.hist.record(now - ts)
		}
	}
}

var tsKey = []byte(`"ts":`)

func findTS(b []byte) int64 {
	i := bytes.Index(b, tsKey)
	if i < 0 {
		return 0
	}
	var v int64
	for _, c := range b[i+len(tsKey):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

func closePeers(peers []*wsPeer) {
	for _, p := range peers {
		if p != nil && p.conn != nil {
			p.dead.Store(true)
			p.conn.Close()
		}
	}
}

var heartbeat = []byte(`{"type":"HEARTBEAT"}`)

// offerTemplate returns the parts around the timestamp of an OFFER from one peer to
// dst, padded with SDP-like text so the whole message is about size bytes, as a
// PeerJS 1.5 data-connection offer is.
func offerTemplate(dst string, size int) (prefix, suffix []byte) {
	prefix = []byte(`{"type":"OFFER","dst":"` + dst + `","payload":{"ts":`)
	head := `,"sdp":{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Bx3f\r\na=ice-pwd:`
	tail := `\r\na=ice-options:trickle\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"},"type":"data","connectionId":"dc_8fj3kd92ls","label":"dc_8fj3kd92ls","metadata":null,"reliable":false,"serialization":"binary"}}`
	fill := size - len(prefix) - 10 - len(head) - len(tail) // ~10 timestamp digits
	if fill < 0 {
		fill = 0
	}
	suffix = []byte(head + strings.Repeat("x", fill) + tail)
	return prefix, suffix
}

// signalStats is one load window.
type signalStats struct {
	OfferedMps      float64 `json:"offered_msgs_per_s"`
	SentMps         float64 `json:"sent_msgs_per_s"`
	DeliveredMps    float64 `json:"delivered_msgs_per_s"`
	Sent            uint64  `json:"sent"`
	Delivered       uint64  `json:"delivered"`
	DeliveredPct    float64 `json:"delivered_pct"`
	P50ms           float64 `json:"latency_p50_ms"`
	P99ms           float64 `json:"latency_p99_ms"`
	ServerCPUPct    float64 `json:"server_cpu_pct"`
	ServerCPUPerMsg float64 `json:"server_cpu_us_per_msg"`
	// The fleet's Redis (generator.apart), not in ServerCPU*.
	RedisCPUPct    float64 `json:"redis_cpu_pct,omitempty"`
	RedisCPUPerMsg float64 `json:"redis_cpu_us_per_msg,omitempty"`
	GenCPUPct      float64 `json:"generator_cpu_pct"`
	OtherCPUPct    float64 `json:"other_cpu_pct"` // everything else on the machine, % of one core
	MessageBytes   int     `json:"message_bytes"`
	ClosedEarly    int64   `json:"connections_closed_by_server"`
	WriteErrors    uint64  `json:"write_errors"`
	WindowS        float64 `json:"window_s"`
	Retried        bool    `json:"retried_after_noise,omitempty"`
}

// load sends rate OFFERs per second in total, spread over all peers (each to its
// partner), with HEARTBEATs every 5 s per peer, for warmup+window+drain. The server CPU
// is summed over srvs (one server, or every node of a fleet).
func (g *signalGen) load(srvs []*server, peers []*wsPeer, rate float64, size int, warmup, window, drain time.Duration) (signalStats, error) {
	st := signalStats{OfferedMps: rate}
	g.hist.reset()
	g.recvWin.Store(0)
	start := time.Now()
	ws := g.nowUS() + warmup.Microseconds()
	g.wStart.Store(ws)
	g.wEnd.Store(ws + window.Microseconds())
	stopSending := start.Add(warmup + window)

	const senders = 2
	var sentWin, writeErrs atomic.Uint64
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		var mine []*wsPeer
		for i := s; i < len(peers); i += senders {
			mine = append(mine, peers[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sw, we := g.send(mine, rate/senders, size, start, stopSending)
			sentWin.Add(sw)
			writeErrs.Add(we)
		}()
	}

	time.Sleep(time.Until(start.Add(warmup)))
	cpu0, err := sumCPU(srvs)
	if err != nil {
		return st, err
	}
	red0, err := g.apartCPU()
	if err != nil {
		return st, err
	}
	gen0 := selfCPU()
	busy0 := machineBusy()
	time.Sleep(time.Until(start.Add(warmup + window)))
	cpu1, err := sumCPU(srvs)
	if err != nil {
		return st, err
	}
	red1, err := g.apartCPU()
	if err != nil {
		return st, err
	}
	gen1 := selfCPU()
	busy1 := machineBusy()
	wg.Wait()
	time.Sleep(drain)

	w := window.Seconds()
	st.WindowS = w
	st.Sent, st.Delivered = sentWin.Load(), g.recvWin.Load()
	st.SentMps, st.DeliveredMps = float64(st.Sent)/w, float64(st.Delivered)/w
	if st.Sent > 0 {
		st.DeliveredPct = 100 * float64(st.Delivered) / float64(st.Sent)
	}
	st.P50ms = g.hist.quantile(0.50) / 1000
	st.P99ms = g.hist.quantile(0.99) / 1000
	st.ServerCPUPct = 100 * (cpu1 - cpu0).Seconds() / w
	st.GenCPUPct = 100 * (gen1 - gen0).Seconds() / w
	st.RedisCPUPct = 100 * (red1 - red0).Seconds() / w
	st.OtherCPUPct = max(0, 100*(busy1-busy0-(cpu1-cpu0)-(red1-red0)-(gen1-gen0)).Seconds()/w)
	if st.Delivered > 0 {
		st.ServerCPUPerMsg = float64((cpu1 - cpu0).Microseconds()) / float64(st.Delivered)
		st.RedisCPUPerMsg = float64((red1 - red0).Microseconds()) / float64(st.Delivered)
	}
	p, s := offerTemplate(peers[0].partner, size)
	st.MessageBytes = len(p) + 10 + len(s)
	st.ClosedEarly = g.closedEarly.Load()
	st.WriteErrors = writeErrs.Load()
	for _, srv := range srvs {
		if err := srv.alive(); err != nil {
			return st, err
		}
	}
	return st, nil
}

// sumCPU is the CPU time of every process in srvs together.
func sumCPU(srvs []*server) (time.Duration, error) {
	var sum time.Duration
	for _, s := range srvs {
		c, err := procCPU(s.pid)
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

func (g *signalGen) apartCPU() (time.Duration, error) {
	if g.apart == nil {
		return 0, nil
	}
	return procCPU(g.apart.pid)
}

// send paces one sender's share; a peer's writes all happen on this goroutine (gorilla
// allows one writer per connection), pongs excepted.
func (g *signalGen) send(peers []*wsPeer, rate float64, size int, start, stop time.Time) (sentWin, writeErrs uint64) {
	type tmpl struct{ prefix, suffix []byte }
	tm := make([]tmpl, len(peers))
	for i, p := range peers {
		tm[i].prefix, tm[i].suffix = offerTemplate(p.partner, size)
	}
	buf := make([]byte, 0, size+64)
	sent, hb, rr := 0, 0, 0
	hbEvery := 5 * time.Second
	for {
		now := time.Now()
		if !now.Before(stop) {
			return sentWin, writeErrs
		}
		el := now.Sub(start)
		due := int(rate*el.Seconds()) - sent
		for ; due > 0; due-- {
			sent++
			i := rr
			rr = (rr + 1) % len(peers)
			p := peers[i]
			if p.dead.Load() {
				continue
			}
			ts := g.nowUS()
			buf = append(buf[:0], tm[i].prefix...)
			buf = strconv.AppendInt(buf, ts, 10)
			buf = append(buf, tm[i].suffix...)
			if err := p.conn.WriteMessage(websocket.TextMessage, buf); err != nil {
				writeErrs++
				p.dead.Store(true)
				continue
			}
			if ts >= g.wStart.Load() && ts < g.wEnd.Load() {
				sentWin++
			}
		}
		// HEARTBEAT every 5 s per peer, spread evenly, as PeerJS 1.x clients do.
		for target := int(el * time.Duration(len(peers)) / hbEvery); hb < target; hb++ {
			p := peers[hb%len(peers)]
			if !p.dead.Load() {
				_ = p.conn.WriteMessage(websocket.TextMessage, heartbeat)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// heartbeats keeps idle peers alive until stop is closed: one goroutine, HEARTBEAT to
// each peer every 5 s, spread evenly.
func heartbeats(peers []*wsPeer, stop <-chan struct{}) {
	if len(peers) == 0 {
		return
	}
	start := time.Now()
	hb := 0
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			target := int(now.Sub(start) * time.Duration(len(peers)) / (5 * time.Second))
			for ; hb < target; hb++ {
				p := peers[hb%len(peers)]
				if !p.dead.Load() {
					if err := p.conn.WriteMessage(websocket.TextMessage, heartbeat); err != nil {
						p.dead.Store(true)
					}
				}
			}
		}
	}
}
