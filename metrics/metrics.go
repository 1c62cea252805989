// Package metrics owns relay's Prometheus registry and every collector it exports.
//
// Collectors are declared together here, created once per process and handed to the
// packages that move them. Label values are fixed, small sets (transport, result,
// reason, direction): never usernames, addresses or anything a client sends. Hot-path
// counters are resolved to plain prometheus.Counter values up front so that counting a
// packet is one atomic add, with no label lookup and no allocation.
package metrics

import (
	"net/http"
	"runtime"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// Label values used by the relay. Keeping them here makes the full label set of every
// metric visible in one place, and lets the README list them.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"

	DirectionClientToPeer = "client_to_peer"
	DirectionPeerToClient = "peer_to_client"

	// Allocation results for relay_turn_allocations_total.
	AllocSuccess              = "success"
	AllocUnauthorized         = "unauthorized"
	AllocQuota                = "quota"
	AllocCapacity             = "capacity"
	AllocUnsupportedTransport = "unsupported_transport"
	AllocError                = "error"

	// Kinds for relay_turn_quota_rejections_total.
	QuotaUser        = "user_allocations"
	QuotaTotal       = "total_allocations"
	QuotaPorts       = "relay_ports"
	QuotaPermissions = "permissions"
	QuotaChannels    = "channels"
	QuotaUserBytes   = "user_bytes_per_day"

	// Results for relay_config_reload_total.
	ReloadSuccess = "success"
	ReloadFailure = "failure"
)

// Metrics holds every collector relay exports, registered in its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	gatherMu     sync.Mutex
	beforeGather []func()

	STUNBindingRequests *prometheus.CounterVec // transport
	AllocationsActive   *prometheus.GaugeVec   // transport
	AllocationsTotal    *prometheus.CounterVec // result
	AuthFailures        *prometheus.CounterVec // reason
	PeerDenied          *prometheus.CounterVec // reason
	RelayedBytes        *prometheus.CounterVec // direction
	RelayedPackets      *prometheus.CounterVec // direction
	PermissionsActive   prometheus.Gauge
	ChannelsActive      prometheus.Gauge
	BuildInfo           *prometheus.GaugeVec

	AllocationDuration *prometheus.HistogramVec // transport
	QuotaRejections    *prometheus.CounterVec   // kind
	ConfigReloads      *prometheus.CounterVec   // result
	Draining           prometheus.Gauge
	ListenerErrors     *prometheus.CounterVec // transport
	Requests           *prometheus.CounterVec // method, class
	Dropped            *prometheus.CounterVec // reason
	AllocationsLimit   prometheus.Gauge
	RelayPorts         prometheus.Gauge
	RelayPortsInUse    prometheus.Gauge
	OffloadActive      prometheus.Gauge       // the kernel data path is attached
	OffloadedPackets   *prometheus.CounterVec // direction: relayed by the kernel data path

	SignalPeers       prometheus.Gauge
	SignalMessages    *prometheus.CounterVec // type
	SignalExpired     prometheus.Counter
	SignalRejected    *prometheus.CounterVec // reason
	ICECredentials    prometheus.Counter
	ICERequestsDenied *prometheus.CounterVec // reason

	SharedPortDropped *prometheus.CounterVec // reason (internal/portmux's Drop*)

	// Pre-resolved children for the per-packet path.
	BytesClientToPeer   prometheus.Counter
	BytesPeerToClient   prometheus.Counter
	PacketsClientToPeer prometheus.Counter
	PacketsPeerToClient prometheus.Counter
}

// New creates and registers every collector. version and revision label relay_build_info.
func New(version, revision string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		STUNBindingRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_stun_binding_requests_total",
			Help: "STUN Binding requests answered, by client transport (udp, tcp, tls).",
		}, []string{"transport"}),
		AllocationsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_turn_allocations_active",
			Help: "TURN allocations currently open, by client transport (udp, tcp, tls).",
		}, []string{"transport"}),
		AllocationsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_allocations_total",
			Help: "Authenticated Allocate requests by outcome: success, unauthorized, quota, capacity, unsupported_transport, error.",
		}, []string{"result"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_auth_failures_total",
			Help: "Requests whose credentials were refused, by reason (malformed, expired, too_far_future, unknown_user, bad_password, wrong_realm, revoked).",
		}, []string{"reason"}),
		PeerDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_peer_denied_total",
			Help: "Peer addresses refused by the peer policy (permissions, channel binds and datagrams), by reason.",
		}, []string{"reason"}),
		RelayedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_relayed_bytes_total",
			Help: "Application payload bytes relayed, counted as they pass, by direction (client_to_peer, peer_to_client).",
		}, []string{"direction"}),
		RelayedPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_relayed_packets_total",
			Help: "Datagrams relayed, counted as they pass, by direction (client_to_peer, peer_to_client).",
		}, []string{"direction"}),
		PermissionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_permissions_active",
			Help: "TURN permissions currently installed, over all allocations.",
		}),
		ChannelsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_channels_active",
			Help: "TURN channel bindings currently installed, over all allocations.",
		}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_build_info",
			Help: "Always 1; labels say which build is running.",
		}, []string{"version", "revision", "goversion"}),
		AllocationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_turn_allocation_duration_seconds",
			Help:    "How long allocations lived, observed when they end, by client transport.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400},
		}, []string{"transport"}),
		QuotaRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_quota_rejections_total",
			Help: "Requests refused by a limit, by kind (user_allocations, user_bytes_per_day: 486; total_allocations, relay_ports, permissions, channels: 508).",
		}, []string{"kind"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_config_reload_total",
			Help: "Configuration reloads (SIGHUP), by result (success, failure).",
		}, []string{"result"}),
		Draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_draining",
			Help: "1 while relay drains before exiting: no new allocations, existing ones keep relaying.",
		}),
		ListenerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_listener_errors_total",
			Help: "Read, write and accept errors on the client listeners, by transport.",
		}, []string{"transport"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_requests_total",
			Help: "STUN/TURN requests answered, by method (binding, allocate, refresh, create_permission, channel_bind) and result class (2xx, 3xx, 4xx, 5xx).",
		}, []string{"method", "class"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_dropped_total",
			Help: "Datagrams dropped without relaying or answering, by reason (no_allocation, no_channel, no_permission, malformed, rate_limited, auth_blocked, bandwidth, backlog, send_error: the kernel refused the send to a peer, budget: the user relayed its bytes for the day).",
		}, []string{"reason"}),
		AllocationsLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_allocations_limit",
			Help: "The configured total_allocations: alerts compare relay_turn_allocations_active with it.",
		}),
		RelayPorts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_relay_ports",
			Help: "Ports in the configured relay port range.",
		}),
		RelayPortsInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_relay_ports_in_use",
			Help: "Relay ports bound by allocations now.",
		}),
		OffloadActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_turn_offload_active",
			Help: "1 when the kernel data path (turn.offload) relays ChannelData of UDP clients, 0 when relay's process does.",
		}),
		OffloadedPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_turn_offloaded_packets_total",
			Help: "Datagrams the kernel data path relayed (also counted in relay_turn_relayed_packets_total), by direction (client_to_peer, peer_to_client).",
		}, []string{"direction"}),
		SignalPeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_signal_peers_connected",
			Help: "PeerJS peers registered on the signaling endpoint now.",
		}),
		SignalMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_signal_messages_total",
			Help: "Signaling messages received from peers, by PeerJS type (OFFER, ANSWER, CANDIDATE, LEAVE, EXPIRE, HEARTBEAT, other).",
		}, []string{"type"}),
		SignalExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_signal_expired_total",
			Help: "Messages queued for an absent peer that expired undelivered (their senders got EXPIRE).",
		}),
		SignalRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_signal_rejected_total",
			Help: "Signaling connections and messages refused, by reason.",
		}, []string{"reason"}),
		ICECredentials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ice_credentials_issued_total",
			Help: "Time-limited TURN credentials handed out by the ICE endpoint.",
		}),
		ICERequestsDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ice_requests_denied_total",
			Help: "ICE endpoint requests refused, by reason (origin, token, rate, bad_request).",
		}, []string{"reason"}),
		SharedPortDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_shared_port_dropped_total",
			Help: "Connections to the port TURN and signaling share closed before they were routed, by reason (per_source, full, evicted, timeout).",
		}, []string{"reason"}),
	}
	m.Registry.MustRegister(
		m.STUNBindingRequests, m.AllocationsActive, m.AllocationsTotal, m.AuthFailures,
		m.PeerDenied, m.RelayedBytes, m.RelayedPackets, m.PermissionsActive, m.ChannelsActive,
		m.BuildInfo,
		m.AllocationDuration, m.QuotaRejections, m.ConfigReloads, m.Draining, m.ListenerErrors, m.Requests,
		m.Dropped, m.AllocationsLimit, m.RelayPorts, m.RelayPortsInUse, m.OffloadActive, m.OffloadedPackets,
		m.SignalPeers, m.SignalMessages, m.SignalExpired, m.SignalRejected, m.ICECredentials, m.ICERequestsDenied,
		m.SharedPortDropped,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.BuildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)

	// Children exist from the start so dashboards see zeros rather than absent series.
	for _, t := range []string{TransportUDP, TransportTCP, TransportTLS} {
		m.STUNBindingRequests.WithLabelValues(t)
		m.AllocationsActive.WithLabelValues(t)
	}
	for _, r := range []string{AllocSuccess, AllocUnauthorized, AllocQuota, AllocCapacity, AllocUnsupportedTransport, AllocError} {
		m.AllocationsTotal.WithLabelValues(r)
	}
	for _, t := range []string{TransportUDP, TransportTCP, TransportTLS} {
		m.AllocationDuration.WithLabelValues(t)
		m.ListenerErrors.WithLabelValues(t)
	}
	for _, k := range []string{QuotaUser, QuotaTotal, QuotaPorts, QuotaPermissions, QuotaChannels, QuotaUserBytes} {
		m.QuotaRejections.WithLabelValues(k)
	}
	for _, r := range []string{ReloadSuccess, ReloadFailure} {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, method := range []string{"binding", "allocate", "refresh", "create_permission", "channel_bind"} {
		for _, class := range []string{"2xx", "3xx", "4xx", "5xx"} {
			m.Requests.WithLabelValues(method, class)
		}
	}
	m.BytesClientToPeer = m.RelayedBytes.WithLabelValues(DirectionClientToPeer)
	m.BytesPeerToClient = m.RelayedBytes.WithLabelValues(DirectionPeerToClient)
	m.PacketsClientToPeer = m.RelayedPackets.WithLabelValues(DirectionClientToPeer)
	m.PacketsPeerToClient = m.RelayedPackets.WithLabelValues(DirectionPeerToClient)
	for _, d := range []string{DirectionClientToPeer, DirectionPeerToClient} {
		m.OffloadedPackets.WithLabelValues(d)
	}
	return m
}

// OnGather registers f to run before every scrape: counters kept elsewhere (the
// kernel's) are brought up to date, so that a scrape sees exact figures.
func (m *Metrics) OnGather(f func()) {
	m.gatherMu.Lock()
	m.beforeGather = append(m.beforeGather, f)
	m.gatherMu.Unlock()
}

// Gather runs the OnGather functions, then gathers the registry.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.gatherMu.Lock()
	fs := slices.Clone(m.beforeGather)
	m.gatherMu.Unlock()
	for _, f := range fs {
		f()
	}
	return m.Registry.Gather()
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m, promhttp.HandlerOpts{Registry: m.Registry})
}
