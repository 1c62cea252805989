package admin

import (
	"encoding/json"
	"sync"
	"time"
)

// Event types of GET /v1/events.
const (
	EventAllocationCreated = "allocation_created"
	EventAllocationEnded   = "allocation_ended"
	EventAuthFailure       = "auth_failure"
	EventRevoked           = "revoked"
)

// Caps of the event stream: readers at once, and bytes waiting for one reader. A reader
// whose backlog would pass the cap is dropped (its stream ends), never waited for: the
// TURN server's read loops publish, and must not stall behind a slow HTTP client.
const (
	maxEventReaders     = 16
	maxEventOutboxBytes = 256 << 10
)

// hub fans events out to the readers of /v1/events.
type hub struct {
	mu      sync.Mutex
	readers map[*reader]struct{}
}

// reader is one /v1/events stream: a byte-capped outbox of encoded events.
type reader struct {
	mu      sync.Mutex
	out     [][]byte
	bytes   int
	dropped bool          // fell behind: the stream ends
	wake    chan struct{} // one token: something was queued, or dropped
	// onDrop, if set, is called once when the reader is dropped: it ends a write the
	// stream's handler may be blocked in, so the connection goes at once.
	onDrop func()
}

func newHub() *hub { return &hub{readers: map[*reader]struct{}{}} }

// subscribe adds a reader, or returns nil when maxEventReaders are reading.
func (h *hub) subscribe() *reader {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.readers) >= maxEventReaders {
		return nil
	}
	r := &reader{wake: make(chan struct{}, 1)}
	h.readers[r] = struct{}{}
	return r
}

func (h *hub) unsubscribe(r *reader) {
	h.mu.Lock()
	delete(h.readers, r)
	h.mu.Unlock()
}

// active reports whether anyone reads: an event nobody reads is never encoded.
func (h *hub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.readers) > 0
}

// publish sends an event of type typ with v's fields, "type" and, unless v has a "time"
// field of its own (stamped), "time", to every reader, in the server-sent events format.
func (h *hub) publish(typ string, v any, stamped bool) {
	if !h.active() {
		return
	}
	data, err := json.Marshal(v)
	if err != nil || len(data) < 2 || data[0] != '{' {
		return
	}
	var head []byte
	if stamped {
		head, err = json.Marshal(struct {
			Type string `json:"type"`
		}{typ})
	} else {
		head, err = json.Marshal(struct {
			Type string    `json:"type"`
			Time time.Time `json:"time"`
		}{typ, time.Now().UTC()})
	}
	if err != nil {
		return
	}
	msg := make([]byte, 0, len(typ)+len(head)+len(data)+16)
	msg = append(msg, "event: "...)
	msg = append(msg, typ...)
	msg = append(msg, "\ndata: "...)
	msg = append(msg, head[:len(head)-1]...)
	if len(data) > 2 {
		msg = append(msg, ',')
		msg = append(msg, data[1:]...)
	} else {
		msg = append(msg, '}')
	}
	msg = append(msg, "\n\n"...)

	h.mu.Lock()
	defer h.mu.Unlock()
	for r := range h.readers {
		if !r.push(msg) {
			delete(h.readers, r) // its place is free at once
		}
	}
}

// setOnDrop sets the reader's onDrop.
func (r *reader) setOnDrop(f func()) {
	r.mu.Lock()
	r.onDrop = f
	r.mu.Unlock()
}

// push queues msg, or drops the reader if its outbox would pass the cap; false when
// the reader is dropped.
func (r *reader) push(msg []byte) bool {
	r.mu.Lock()
	if !r.dropped && r.bytes+len(msg) > maxEventOutboxBytes {
		r.dropped, r.out, r.bytes = true, nil, 0
		if r.onDrop != nil {
			r.onDrop()
		}
	} else if !r.dropped {
		r.out = append(r.out, msg)
		r.bytes += len(msg)
	}
	dropped := r.dropped
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return !dropped
}

// take returns what is queued, and whether the reader was dropped.
func (r *reader) take() (msgs [][]byte, dropped bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msgs, r.out, r.bytes = r.out, nil, 0
	return msgs, r.dropped
}
