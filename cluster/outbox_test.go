package cluster

import (
	"bytes"
	"net/netip"
	"testing"
)

// The outbox is capped per sender address and in total, in bytes: one client's peers
// filling their share leave room for everyone else (no publisher runs here, so nothing
// drains).
func TestClusterOutboxCaps(t *testing.T) {
	r := &Registry{out: newOutbox()}
	r.up.Store(true)
	msg := bytes.Repeat([]byte("x"), 64<<10)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	n := 0
	for r.post("n2", 'm', "dst", msg, a) {
		n++
		if n > 100 {
			t.Fatal("no per-address cap")
		}
	}
	if got := n * len(msg); got > outboxBytesPerAddr || got < outboxBytesPerAddr-2*len(msg) {
		t.Errorf("address a held %d bytes, cap %d", got, outboxBytesPerAddr)
	}
	if !r.post("n2", 'm', "dst", msg, b) {
		t.Fatal("a full address crowded out another")
	}
	// Other addresses fill the total.
	for i := 0; ; i++ {
		from := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		if !r.post("n3", 'm', "dst", msg, from) {
			break
		}
		if i > 1000 {
			t.Fatal("no total cap")
		}
	}
	if r.out.bytes > outboxBytes {
		t.Errorf("outbox holds %d bytes, cap %d", r.out.bytes, outboxBytes)
	}
	// Taken for sending, the bytes count no more.
	bs := r.out.take()
	if len(bs) != 2 || r.out.bytes != 0 || len(r.out.byAddr) != 0 {
		t.Fatalf("after take: %d batches, %d bytes, %d addresses", len(bs), r.out.bytes, len(r.out.byAddr))
	}
	frames := 0
	eachFrame(string(bs[0].buf[1:]), func(kind byte, id, body string) {
		if kind != 'm' || id != "dst" || len(body) != len(msg) {
			t.Fatalf("frame %c %q %d bytes", kind, id, len(body))
		}
		frames++
	})
	if frames != bs[0].frames {
		t.Errorf("decoded %d frames of %d", frames, bs[0].frames)
	}
	if !r.post("n2", 'm', "dst", msg, a) {
		t.Error("address a still refused after its bytes were sent")
	}
}

// Frames carry ids of any bytes; a malformed batch stops decoding, never panics.
func FuzzClusterBatch(f *testing.F) {
	f.Add("a\x00b", []byte(`{"type":"OFFER"}`), []byte{0x05, 'm', 0x01, 'x'})
	f.Fuzz(func(t *testing.T, id string, body, junk []byte) {
		r := &Registry{out: newOutbox()}
		r.up.Store(true)
		r.post("n", 'm', id, body, netip.Addr{})
		r.post("n", 'f', id, body, netip.Addr{})
		b := r.out.take()[0]
		n := 0
		eachFrame(string(b.buf[1:]), func(kind byte, gotID, gotBody string) {
			if gotID != id || gotBody != string(body) {
				t.Fatalf("frame %d: id %q body %q", n, gotID, gotBody)
			}
			n++
		})
		if n != 2 {
			t.Fatalf("decoded %d frames of 2", n)
		}
		eachFrame(string(junk), func(byte, string, string) {})
		eachFrame(string(append(b.buf[1:len(b.buf)-1:len(b.buf)-1], junk...)), func(byte, string, string) {})
	})
}
