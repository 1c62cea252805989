package cluster

import "github.com/prometheus/client_golang/prometheus"

// Collectors are the fleet's metrics, read from the Registry when scraped. They are
// registered only on a node with [cluster] redis, so a single node's /metrics is
// unchanged.
func (r *Registry) Collectors() []prometheus.Collector {
	nodes := func(draining bool) func() float64 {
		return func() float64 {
			n := 0
			for _, a := range r.Nodes() {
				if a.Draining == draining {
					n++
				}
			}
			return float64(n)
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_cluster_nodes", ConstLabels: prometheus.Labels{"state": "up"},
			Help: "Nodes of the fleet announcing themselves, by state."}, nodes(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_cluster_nodes", ConstLabels: prometheus.Labels{"state": "draining"},
			Help: "Nodes of the fleet announcing themselves, by state."}, nodes(true)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_cluster_backend_up",
			Help: "1 if the last call to the fleet's Redis succeeded, else 0."}, func() float64 {
			if r.BackendUp() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_cluster_messages_sent_total",
			Help: "Signaling messages published to a peer on another node."}, func() float64 { return float64(r.CrossNodeSent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_cluster_messages_received_total",
			Help: "Signaling messages received from another node for a peer here."}, func() float64 { return float64(r.CrossNodeReceived.Load()) }),
		// The node's name as a label once, so a dashboard can show names rather than
		// scrape addresses; node names are the operator's, never a user's.
		nodeInfo{r, prometheus.NewDesc("relay_cluster_node_info", "Always 1; labels name this node and its region in the fleet.", []string{"node", "region"}, nil)},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "relay_cluster_outbox_bytes",
			Help: "Bytes of messages for other nodes waiting for their round trip to Redis."}, func() float64 {
			r.out.mu.Lock()
			defer r.out.mu.Unlock()
			return float64(r.out.bytes)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "relay_cluster_backend_errors_total",
			Help: "Calls to the fleet's Redis that failed."}, func() float64 { return float64(r.BackendErrors.Load()) }),
	}
}

// nodeInfo is relay_cluster_node_info, with the region as of the last reload.
type nodeInfo struct {
	r    *Registry
	desc *prometheus.Desc
}

func (c nodeInfo) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c nodeInfo) Collect(ch chan<- prometheus.Metric) {
	region := ""
	if p := c.r.region.Load(); p != nil {
		region = *p
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, c.r.node, region)
}
