//go:build linux

package main

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"github.com/relayproject/relay/internal/rawudp"
)

// The STUN phase measures how many Binding requests a server answers per second when
// it has to: a closed loop of S client sockets, each keeping W requests in flight and
// sending one more for every answer. One generator goroutine moves them all with
// recvmmsg/sendmmsg, so the rate is the machine's, shared with the server, not the
// generator's system calls.

type stunStats struct {
	Sockets     int     `json:"sockets"`
	Outstanding int     `json:"outstanding_per_socket"`
	Seconds     float64 `json:"seconds"`
	Responses   uint64  `json:"responses"`
	PerSec      float64 `json:"responses_per_s"`
	ServerCPU   float64 `json:"server_cpu_pct"`
	ServerUsPer float64 `json:"server_cpu_us_per_response"`
	GenCPU      float64 `json:"generator_cpu_pct"`
	Reprimed    uint64  `json:"reprimed"` // windows re-sent after answers stopped coming (losses)
}

func (o *options) stunPhase(kind string, r *turnRound) error {
	o.waitQuiet()
	srv, err := o.startServer(kind)
	if err != nil {
		return err
	}
	defer o.stopServer(srv)
	st, err := bindingFlood(srv, o.stunSockets, o.stunOutstanding, o.warmup, o.window)
	if err != nil {
		return err
	}
	r.STUN = st
	o.logf("  %-6s STUN: %.0f Binding responses/s (%d sockets × %d in flight); server %.1f%% CPU = %.2f µs/response; generator %.1f%%; %d windows re-sent",
		kind, st.PerSec, st.Sockets, st.Outstanding, st.ServerCPU, st.ServerUsPer, st.GenCPU, st.Reprimed)
	return srv.alive()
}

func bindingFlood(srv *server, sockets, window int, warmup, measure time.Duration) (stunStats, error) {
	st := stunStats{Sockets: sockets, Outstanding: window}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	ep, err := rawudp.NewEpoll()
	if err != nil {
		return st, err
	}
	defer ep.Close()
	type client struct {
		conn *rawudp.Conn
		tx   *rawudp.Batch // window copies of one request
		rx   *rawudp.Batch
		last time.Time // last answer
	}
	clients := make([]*client, sockets)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.conn.Close()
			}
		}
	}()
	for i := range clients {
		conn, err := rawudp.Open(rawudp.Options{Local: netip.AddrPortFrom(loopback, 0), Remote: srv.turn, Buffer: 1 << 20})
		if err != nil {
			return st, err
		}
		c := &client{conn: conn, tx: rawudp.NewBatch(window, 20), rx: rawudp.NewBatch(64, 256)}
		clients[i] = c
		var txid [12]byte
		_, _ = rand.Read(txid[:])
		for j := 0; j < c.tx.Slots(); j++ {
			b := c.tx.Buf(j)
			binary.BigEndian.PutUint16(b[0:2], 0x0001) // Binding request, no attributes
			binary.BigEndian.PutUint16(b[2:4], 0)
			binary.BigEndian.PutUint32(b[4:8], 0x2112A442)
			copy(b[8:20], txid[:])
		}
		if err := ep.Add(conn, int32(i)); err != nil {
			return st, err
		}
	}
	prime := func(c *client) {
		_, _ = c.conn.Send(c.tx, 0, window)
		c.last = time.Now()
	}
	for _, c := range clients {
		prime(c)
	}
	ready := make([]int32, 64)
	start := time.Now()
	wStart, wEnd := start.Add(warmup), start.Add(warmup+measure)
	var cpu0, gen0 time.Duration
	inWindow := false
	var count uint64
	lastCheck := start
	for {
		now := time.Now()
		if !inWindow && now.After(wStart) {
			inWindow = true
			if cpu0, err = procCPU(srv.pid); err != nil {
				return st, err
			}
			gen0 = selfCPU()
			count = 0
		}
		if now.After(wEnd) {
			break
		}
		n, err := ep.Wait(ready, 10*time.Millisecond)
		if err != nil {
			return st, err
		}
		for _, tag := range ready[:n] {
			c := clients[tag]
			for {
				k, err := c.conn.Recv(c.rx)
				if err != nil || k == 0 {
					break
				}
				answered := 0
				for j := 0; j < k; j++ {
					if p := c.rx.Data(j); len(p) >= 20 && binary.BigEndian.Uint16(p[0:2]) == 0x0101 {
						answered++
					}
				}
				count += uint64(answered)
				c.last = time.Now()
				for sent := 0; sent < answered; {
					m, err := c.conn.Send(c.tx, 0, min(answered-sent, window))
					if err != nil || m == 0 {
						break // the socket buffer is full: the answers still to come refill it
					}
					sent += m
				}
				if k < c.rx.Slots() {
					break
				}
			}
		}
		if now.Sub(lastCheck) > 50*time.Millisecond {
			lastCheck = now
			for _, c := range clients {
				if now.Sub(c.last) > 100*time.Millisecond {
					prime(c) // answers stopped: requests or answers were lost, start over
					st.Reprimed++
				}
			}
		}
	}
	cpu1, err := procCPU(srv.pid)
	if err != nil {
		return st, err
	}
	gen1 := selfCPU()
	st.Seconds = measure.Seconds()
	st.Responses = count
	st.PerSec = float64(count) / st.Seconds
	st.ServerCPU = 100 * (cpu1 - cpu0).Seconds() / st.Seconds
	st.GenCPU = 100 * (gen1 - gen0).Seconds() / st.Seconds
	if count > 0 {
		st.ServerUsPer = float64((cpu1 - cpu0).Microseconds()) / float64(count)
	}
	if count == 0 {
		return st, fmt.Errorf("no Binding answered")
	}
	return st, nil
}
