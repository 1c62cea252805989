package check

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// First retransmission of a request over UDP; it doubles after each (RFC 8489 7.2.1),
// until the step's deadline.
const initialRTO = 250 * time.Millisecond

// errNoAnswer: a request got no response before the step's deadline.
var errNoAnswer = errors.New("no answer")

// tlsError wraps a failed TLS handshake.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// dataMsg is a Data indication: payload from a peer, through the relay.
type dataMsg struct {
	from    net.UDPAddr
	payload []byte
}

// stunConn is one client connection to the server (a connected UDP socket, a TCP or a TLS
// stream) with a reader that matches responses to requests and queues Data indications.
type stunConn struct {
	nc     net.Conn
	stream bool

	wmu sync.Mutex // serialises writes (one frame at a time on streams)

	mu      sync.Mutex
	waiting map[[stun.TransactionIDSize]byte]chan *stun.Message
	readErr error

	data chan dataMsg
	done chan struct{} // closed when the reader stops; readErr is then set
}

// dial connects to u. For TLS the handshake is part of dialing and its failures come back
// as *tlsError.
func dial(ctx context.Context, u serverURL, tlsConf *tls.Config) (*stunConn, error) {
	var d net.Dialer
	network := "udp"
	if u.transport != "udp" {
		network = "tcp"
	}
	nc, err := d.DialContext(ctx, network, u.addr())
	if err != nil {
		return nil, err
	}
	if u.transport == "tls" {
		conf := tlsConf.Clone()
		if conf.ServerName == "" {
			conf.ServerName = u.host
		}
		tc := tls.Client(nc, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, &tlsError{err}
		}
		nc = tc
	}
	c := &stunConn{
		nc: nc, stream: network == "tcp",
		waiting: map[[stun.TransactionIDSize]byte]chan *stun.Message{},
		data:    make(chan dataMsg, 256),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
}

func (c *stunConn) close() {
	_ = c.nc.Close()
	<-c.done
}

func (c *stunConn) localAddr() net.Addr { return c.nc.LocalAddr() }

func (c *stunConn) readLoop() {
	var err error
	defer func() {
		c.mu.Lock()
		c.readErr = err
		c.mu.Unlock()
		close(c.done)
	}()
	var br *bufio.Reader
	buf := make([]byte, 64*1024)
	if c.stream {
		br = bufio.NewReaderSize(c.nc, 64*1024)
	}
	for {
		var frame []byte
		if c.stream {
			frame, err = readFrame(br)
		} else {
			var n int
			n, err = c.nc.Read(buf)
			frame = buf[:n]
		}
		if err != nil {
			return
		}
		c.handle(frame)
	}
}

// readFrame reads one STUN message or ChannelData message from a stream (RFC 8656 11.5:
// ChannelData is padded to 4 bytes over TCP).
func readFrame(r *bufio.Reader) ([]byte, error) {
	hdr, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	var size int
	switch {
	case hdr[0]&0xC0 == 0:
		size = 20 + n
	case hdr[0] >= 0x40 && hdr[0] <= 0x7F:
		size = 4 + (n+3)&^3
	default:
		return nil, explainedf("the server sent bytes that are neither STUN nor ChannelData (first byte %#02x): is it a STUN/TURN port?", hdr[0])
	}
	frame := make([]byte, size)
	if _, err := io.ReadFull(r, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func (c *stunConn) handle(frame []byte) {
	if !stun.IsMessage(frame) {
		return // ChannelData: this client binds no channels
	}
	m := &stun.Message{Raw: append([]byte(nil), frame...)}
	if err := m.Decode(); err != nil {
		return
	}
	switch m.Type.Class {
	case stun.ClassSuccessResponse, stun.ClassErrorResponse:
		c.mu.Lock()
		ch, ok := c.waiting[m.TransactionID]
		delete(c.waiting, m.TransactionID)
		c.mu.Unlock()
		if ok {
			ch <- m
		}
	case stun.ClassIndication:
		if m.Type.Method != stun.MethodData {
			return
		}
		var peer stun.XORMappedAddress
		if err := peer.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
			return
		}
		payload, err := m.Get(stun.AttrData)
		if err != nil {
			return
		}
		select {
		case c.data <- dataMsg{from: net.UDPAddr{IP: peer.IP, Port: peer.Port}, payload: payload}:
		default: // nobody reads fast enough: drop, like the network would
		}
	}
}

func (c *stunConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// connErr is why the reader stopped.
func (c *stunConn) connErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil {
		return net.ErrClosed
	}
	return c.readErr
}

// roundTrip sends request m and waits for its response (success or error class),
// retransmitting over UDP, until ctx ends (errNoAnswer) or the connection fails.
func (c *stunConn) roundTrip(ctx context.Context, m *stun.Message) (*stun.Message, error) {
	ch := make(chan *stun.Message, 1)
	c.mu.Lock()
	c.waiting[m.TransactionID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, m.TransactionID)
		c.mu.Unlock()
	}()
	if err := c.write(m.Raw); err != nil {
		return nil, err
	}
	rto := initialRTO
	timer := time.NewTimer(rto)
	defer timer.Stop()
	for {
		select {
		case res := <-ch:
			return res, nil
		case <-c.done:
			return nil, c.connErr()
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, errNoAnswer
			}
			return nil, ctx.Err()
		case <-timer.C:
			if !c.stream {
				if err := c.write(m.Raw); err != nil {
					return nil, err
				}
			}
			rto *= 2
			timer.Reset(rto)
		}
	}
}

// binding sends a STUN Binding request and returns the reflexive address.
func (c *stunConn) binding(ctx context.Context) (*net.UDPAddr, error) {
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return nil, err
	}
	res, err := c.roundTrip(ctx, m)
	if err != nil {
		return nil, err
	}
	if err := responseError(res); err != nil {
		return nil, err
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(res); err == nil {
		return &net.UDPAddr{IP: xa.IP, Port: xa.Port}, nil
	}
	var ma stun.MappedAddress
	if err := ma.GetFrom(res); err == nil {
		return &net.UDPAddr{IP: ma.IP, Port: ma.Port}, nil
	}
	return nil, explainedf("the Binding response has no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS")
}
