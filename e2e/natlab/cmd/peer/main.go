// Command peer is the NAT lab's WebRTC peer: a pion/webrtc data-channel peer that speaks
// the PeerJS protocol to relay's signaling endpoint and takes its ICE servers from
// relay's {path}ice, the way a PeerJS page does. The lab runs one inside each home
// network namespace (ip netns exec).
//
//	peer -signal http://198.18.0.1:9001/ -id bob                  answer calls: "click" -> "Hello World!"
//	peer -signal http://198.18.0.1:9001/ -id alice -call bob      call bob, send "click", wait for "Hello World!"
//
// It prints READY once the signaling server said OPEN, and one line
// RESULT {json} when it is done (connected or not); the exit status is 0 either way
// unless it could not even start.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// result is what the lab reads back.
type result struct {
	Role               string   `json:"role"`
	Connected          bool     `json:"connected"`
	Message            string   `json:"message,omitempty"`    // the reply the caller got, or what the answerer was sent
	Millis             float64  `json:"millis,omitempty"`     // caller: call start to "Hello World!"
	FirstPair          string   `json:"first_pair,omitempty"` // selected pair types when the first message arrived
	LocalType          string   `json:"local_type,omitempty"` // selected pair, settle after the first message
	LocalAddr          string   `json:"local_addr,omitempty"`
	LocalRelayProtocol string   `json:"local_relay_protocol,omitempty"` // udp, tcp or tls when LocalType is relay
	RemoteType         string   `json:"remote_type,omitempty"`
	RemoteAddr         string   `json:"remote_addr,omitempty"`
	ICEState           string   `json:"ice_state"`
	Srflx              []string `json:"srflx"`   // server-reflexive addresses STUN reported
	Relayed            []string `json:"relayed"` // relayed addresses TURN allocated
	ICEServers         []string `json:"ice_servers"`
	Error              string   `json:"error,omitempty"`
}

// message is a PeerJS protocol message.
type message struct {
	Type    string          `json:"type"`
	Src     string          `json:"src,omitempty"`
	Dst     string          `json:"dst,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// payload covers the OFFER, ANSWER and CANDIDATE payloads of PeerJS 1.5.
type payload struct {
	SDP           *webrtc.SessionDescription `json:"sdp,omitempty"`
	Candidate     *webrtc.ICECandidateInit   `json:"candidate,omitempty"`
	Type          string                     `json:"type"`
	ConnectionID  string                     `json:"connectionId"`
	Label         string                     `json:"label,omitempty"`
	Reliable      bool                       `json:"reliable,omitempty"`
	Serialization string                     `json:"serialization,omitempty"`
	Browser       string                     `json:"browser,omitempty"`
}

type peer struct {
	id, dst    string
	ws         *websocket.Conn
	wmu        sync.Mutex
	pc         *webrtc.PeerConnection
	connID     string
	mu         sync.Mutex
	remoteSet  bool
	pending    []webrtc.ICECandidateInit
	res        result
	resMu      sync.Mutex
	done       chan struct{}
	doneOnce   sync.Once
	printOnce  sync.Once
	start      time.Time
	iceServers []webrtc.ICEServer
	policy     webrtc.ICETransportPolicy
}

func main() {
	signal := flag.String("signal", "", "base URL of relay's signaling endpoint, e.g. http://198.18.0.1:9001/")
	key := flag.String("key", "peerjs", "PeerJS key")
	id := flag.String("id", "", "our peer id")
	call := flag.String("call", "", "peer id to call; empty: answer calls")
	policy := flag.String("policy", "all", "ICE transport policy: all or relay")
	servers := flag.String("servers", "all", "which ICE servers of {path}ice to use: all, stun (no TURN), udp, tcp, tls (TURN over that transport only, plus STUN)")
	timeout := flag.Duration("timeout", 20*time.Second, "give up after this long")
	flag.Parse()
	if *signal == "" || *id == "" {
		fmt.Fprintln(os.Stderr, "usage: peer -signal URL -id ID [-call ID] [-policy all|relay] [-servers all|stun|udp|tcp|tls]")
		os.Exit(2)
	}
	if !strings.HasSuffix(*signal, "/") {
		*signal += "/"
	}
	p := &peer{id: *id, dst: *call, done: make(chan struct{})}
	p.res.Role = "answer"
	if p.dst != "" {
		p.res.Role = "call"
	}
	p.res.Srflx, p.res.Relayed, p.res.ICEServers = []string{}, []string{}, []string{}
	if *policy == "relay" {
		p.policy = webrtc.ICETransportPolicyRelay
	} else {
		p.policy = webrtc.ICETransportPolicyAll
	}
	if err := p.run(*signal, *key, *servers, *timeout); err != nil {
		p.fail(err)
	}
	p.report()
}

func (p *peer) fail(err error) {
	p.resMu.Lock()
	if p.res.Error == "" {
		p.res.Error = err.Error()
	}
	p.resMu.Unlock()
	p.finish()
}

func (p *peer) getPC() *webrtc.PeerConnection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pc
}

func (p *peer) setPC(pc *webrtc.PeerConnection) {
	p.mu.Lock()
	p.pc = pc
	p.mu.Unlock()
}

func (p *peer) finish() { p.doneOnce.Do(func() { close(p.done) }) }

// printResult prints the RESULT line, once.
func (p *peer) printResult() {
	p.printOnce.Do(func() {
		p.resMu.Lock()
		defer p.resMu.Unlock()
		if p.getPC() != nil {
			p.res.ICEState = p.getPC().ICEConnectionState().String()
		}
		b, _ := json.Marshal(p.res)
		fmt.Printf("RESULT %s\n", b)
	})
}

// report prints RESULT, then closes the connection (bounded: a TURN allocation still
// waiting on a blocked transport must not hold the process).
func (p *peer) report() {
	p.printResult()
	if p.getPC() != nil {
		closed := make(chan struct{})
		go func() { _ = p.getPC().Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
		}
	}
}

func (p *peer) run(base, key, servers string, timeout time.Duration) error {
	var err error
	if p.iceServers, err = fetchICE(base, servers); err != nil {
		return err
	}
	for _, s := range p.iceServers {
		p.res.ICEServers = append(p.res.ICEServers, s.URLs...)
	}
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "peerjs"
	u.RawQuery = url.Values{"key": {key}, "id": {p.id}, "token": {randomHex(8)}, "version": {"1.5.5"}}.Encode()
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	p.ws, _, err = dialer.Dial(u.String(), nil)
	if err != nil {
		return fmt.Errorf("signaling websocket %s: %w", u.Redacted(), err)
	}
	defer p.ws.Close()
	// OPEN first.
	_ = p.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m message
	if err := p.ws.ReadJSON(&m); err != nil {
		return fmt.Errorf("signaling: waiting for OPEN: %w", err)
	}
	if m.Type != "OPEN" {
		return fmt.Errorf("signaling answered %s %s instead of OPEN", m.Type, m.Payload)
	}
	_ = p.ws.SetReadDeadline(time.Time{})
	fmt.Println("READY")
	go p.heartbeat()
	go p.readLoop()
	if p.dst != "" {
		if err := p.call(); err != nil {
			return err
		}
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.resMu.Lock()
		if p.res.Error == "" && !p.res.Connected {
			p.res.Error = fmt.Sprintf("no %q within %v", "Hello World!", timeout)
		}
		p.resMu.Unlock()
	}
	p.send(message{Type: "LEAVE", Dst: p.dst})
	return nil
}

// fetchICE reads {path}ice and keeps the servers the -servers flag asks for.
func fetchICE(base, which string) ([]webrtc.ICEServer, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "ice")
	if err != nil {
		return nil, fmt.Errorf("ICE endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ICE endpoint: %s: %s", resp.Status, body)
	}
	var cfg struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"iceServers"`
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		return nil, fmt.Errorf("ICE endpoint answered %q: %w", body, err)
	}
	var out []webrtc.ICEServer
	for _, s := range cfg.ICEServers {
		var urls []string
		for _, u := range s.URLs {
			isTURN := strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")
			keep := false
			switch which {
			case "all":
				keep = true
			case "stun":
				keep = !isTURN
			case "udp":
				keep = !isTURN || strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "transport=udp")
			case "tcp":
				keep = !isTURN || strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "transport=tcp")
			case "tls":
				keep = !isTURN || strings.HasPrefix(u, "turns:")
			default:
				return nil, fmt.Errorf("-servers %q: want all, stun, udp, tcp or tls", which)
			}
			if keep {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls, Username: s.Username, Credential: s.Credential})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ICE endpoint gave no server for -servers %s: %s", which, body)
	}
	return out, nil
}

func (p *peer) heartbeat() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			p.send(message{Type: "HEARTBEAT"})
		}
	}
}

func (p *peer) send(m message) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = p.ws.WriteJSON(m)
}

func (p *peer) sendPayload(typ, dst string, pl payload) {
	b, _ := json.Marshal(pl)
	p.send(message{Type: typ, Dst: dst, Payload: b})
}

func (p *peer) newPC() (*webrtc.PeerConnection, error) {
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: p.iceServers, ICETransportPolicy: p.policy})
	if err != nil {
		return nil, err
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		switch c.Typ {
		case webrtc.ICECandidateTypeSrflx:
			p.resMu.Lock()
			p.res.Srflx = append(p.res.Srflx, fmt.Sprintf("%s:%d", c.Address, c.Port))
			p.resMu.Unlock()
		case webrtc.ICECandidateTypeRelay:
			p.resMu.Lock()
			p.res.Relayed = append(p.res.Relayed, fmt.Sprintf("%s:%d", c.Address, c.Port))
			p.resMu.Unlock()
		}
		init := c.ToJSON()
		p.mu.Lock()
		dst, connID := p.dst, p.connID
		p.mu.Unlock()
		p.sendPayload("CANDIDATE", dst, payload{Candidate: &init, Type: "data", ConnectionID: connID})
	})
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		fmt.Fprintf(os.Stderr, "%s ice %s (%.0f ms)\n", p.id, s, float64(time.Since(p.start).Microseconds())/1000)
		if s == webrtc.ICEConnectionStateFailed {
			p.fail(fmt.Errorf("ICE failed"))
		}
	})
	return pc, nil
}

// call is the PeerJS caller: a data channel labelled with the connection id, the offer,
// "click" once it opens.
func (p *peer) call() error {
	p.start = time.Now()
	p.mu.Lock()
	p.connID = "dc_" + randomHex(6)
	p.mu.Unlock()
	pc, err := p.newPC()
	if err != nil {
		return err
	}
	p.setPC(pc)
	dc, err := pc.CreateDataChannel(p.connID, nil)
	if err != nil {
		return err
	}
	dc.OnOpen(func() {
		fmt.Fprintf(os.Stderr, "%s data channel open (%.0f ms)\n", p.id, float64(time.Since(p.start).Microseconds())/1000)
		if err := dc.SendText("click"); err != nil {
			p.fail(fmt.Errorf("sending click: %w", err))
		}
	})
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		elapsed := time.Since(p.start)
		p.resMu.Lock()
		p.res.Message = string(msg.Data)
		p.res.Millis = float64(elapsed.Microseconds()) / 1000
		p.res.Connected = string(msg.Data) == "Hello World!"
		p.resMu.Unlock()
		go func() {
			p.watchPair()
			p.finish()
		}()
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	p.sendPayload("OFFER", p.dst, payload{SDP: pc.LocalDescription(), Type: "data", ConnectionID: p.connID,
		Label: p.connID, Reliable: true, Serialization: "raw", Browser: "pion"})
	return nil
}

// answer handles an OFFER: the answerer replies "Hello World!" to "click".
func (p *peer) answer(m message, pl payload) {
	if p.getPC() != nil {
		return // one call per run
	}
	p.start = time.Now()
	p.mu.Lock()
	p.dst, p.connID = m.Src, pl.ConnectionID
	p.mu.Unlock()
	pc, err := p.newPC()
	if err != nil {
		p.fail(err)
		return
	}
	p.setPC(pc)
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(msg webrtc.DataChannelMessage) {
			if string(msg.Data) != "click" {
				return
			}
			if err := dc.SendText("Hello World!"); err != nil {
				p.fail(err)
				return
			}
			p.resMu.Lock()
			p.res.Connected, p.res.Message = true, "Hello World!"
			p.resMu.Unlock()
			go func() {
				p.watchPair()
				// Report now: a browser caller may go away without a LEAVE or an SCTP
				// close. The answerer keeps serving until the caller leaves or the timeout.
				p.printResult()
			}()
		})
		dc.OnClose(p.finish)
	})
	if err := p.setRemote(*pl.SDP); err != nil {
		p.fail(err)
		return
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		p.fail(err)
		return
	}
	if err := pc.SetLocalDescription(ans); err != nil {
		p.fail(err)
		return
	}
	p.sendPayload("ANSWER", m.Src, payload{SDP: pc.LocalDescription(), Type: "data", ConnectionID: p.connID, Browser: "pion"})
}

func (p *peer) setRemote(sd webrtc.SessionDescription) error {
	if err := p.getPC().SetRemoteDescription(sd); err != nil {
		return err
	}
	p.mu.Lock()
	p.remoteSet = true
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, c := range pending {
		_ = p.getPC().AddICECandidate(c)
	}
	return nil
}

func (p *peer) readLoop() {
	for {
		var m message
		if err := p.ws.ReadJSON(&m); err != nil {
			select {
			case <-p.done:
			default:
				p.fail(fmt.Errorf("signaling closed: %w", err))
			}
			return
		}
		var pl payload
		if len(m.Payload) > 0 {
			_ = json.Unmarshal(m.Payload, &pl)
		}
		switch m.Type {
		case "OFFER":
			if pl.SDP != nil {
				p.answer(m, pl)
			}
		case "ANSWER":
			if pl.SDP != nil && p.getPC() != nil {
				if err := p.setRemote(*pl.SDP); err != nil {
					p.fail(err)
				}
			}
		case "CANDIDATE":
			if pl.Candidate == nil {
				continue
			}
			p.mu.Lock()
			if !p.remoteSet {
				p.pending = append(p.pending, *pl.Candidate)
				p.mu.Unlock()
				continue
			}
			p.mu.Unlock()
			_ = p.getPC().AddICECandidate(*pl.Candidate)
		case "EXPIRE", "ERROR", "ID-TAKEN":
			p.fail(fmt.Errorf("signaling: %s %s", m.Type, m.Payload))
		case "LEAVE":
			if p.res.Role == "answer" {
				p.finish()
			} else {
				p.fail(fmt.Errorf("signaling: %s left", m.Src))
			}
		}
	}
}

// settle is how long a peer watches the selected pair after the first message: an ICE
// agent may still switch to a better pair as more checks succeed (Chromium does).
const settle = time.Second

// watchPair records the selected pair at the first message and again after settle.
func (p *peer) watchPair() {
	p.selectedPair()
	p.resMu.Lock()
	if p.res.LocalType != "" {
		p.res.FirstPair = p.res.LocalType + " / " + p.res.RemoteType
	}
	p.resMu.Unlock()
	time.Sleep(settle)
	p.selectedPair()
}

// selectedPair records the nominated pair, with the relay protocol of a relay candidate.
func (p *peer) selectedPair() {
	sctp := p.getPC().SCTP()
	if sctp == nil {
		return
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return
	}
	p.resMu.Lock()
	defer p.resMu.Unlock()
	p.res.LocalType, p.res.LocalAddr = pair.Local.Typ.String(), fmt.Sprintf("%s:%d", pair.Local.Address, pair.Local.Port)
	p.res.RemoteType, p.res.RemoteAddr = pair.Remote.Typ.String(), fmt.Sprintf("%s:%d", pair.Remote.Address, pair.Remote.Port)
	p.res.LocalRelayProtocol = ""
	if pair.Local.Typ == webrtc.ICECandidateTypeRelay {
		for _, s := range p.getPC().GetStats() {
			if cs, ok := s.(webrtc.ICECandidateStats); ok && cs.Type == webrtc.StatsTypeLocalCandidate &&
				cs.CandidateType == webrtc.ICECandidateTypeRelay && cs.IP == pair.Local.Address && int(cs.Port) == int(pair.Local.Port) {
				p.res.LocalRelayProtocol = cs.RelayProtocol
			}
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
