package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestExposition: every metric the README documents is served at /metrics on its own
// listener, with the Go and process collectors beside them.
func TestExposition(t *testing.T) {
	m := New("v-test", "abc123")
	m.BytesClientToPeer.Add(42)
	ep, err := Listen("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Shutdown(context.Background())
	resp, err := http.Get("http://" + ep.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`relay_stun_binding_requests_total{transport="udp"} 0`,
		`relay_stun_binding_requests_total{transport="tls"} 0`,
		`relay_turn_allocations_active{transport="tcp"} 0`,
		`relay_turn_allocations_total{result="success"} 0`,
		`relay_turn_allocations_total{result="quota"} 0`,
		`relay_turn_relayed_bytes_total{direction="client_to_peer"} 42`,
		`relay_turn_relayed_bytes_total{direction="peer_to_client"} 0`,
		`relay_turn_relayed_packets_total{direction="client_to_peer"} 0`,
		`relay_turn_permissions_active 0`,
		`relay_turn_channels_active 0`,
		`relay_turn_offload_active 0`,
		`relay_turn_offloaded_packets_total{direction="peer_to_client"} 0`,
		`relay_build_info{goversion="go`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if resp, err := http.Get("http://" + ep.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET / = %d, want 404: the metrics listener serves only /metrics", resp.StatusCode)
		}
	}
}

// TestOnGather: what OnGather registers runs before each scrape, so counters kept
// elsewhere (the kernel data path's) are current in what the scrape returns.
func TestOnGather(t *testing.T) {
	m := New("v-test", "abc123")
	m.OnGather(func() { m.OffloadedPackets.WithLabelValues(DirectionClientToPeer).Add(7) })
	ep, err := Listen("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Shutdown(context.Background())
	for _, want := range []string{"7", "14"} {
		resp, err := http.Get("http://" + ep.Addr().String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if line := `relay_turn_offloaded_packets_total{direction="client_to_peer"} ` + want; !strings.Contains(string(b), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}
