package main

import (
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/relay"
	"github.com/relayproject/relay/signaling"
)

// openFleet joins the fleet named by [cluster] redis: signaling's registry becomes the
// shared one.
func openFleet(cfg *config.Config, log *slog.Logger) (*cluster.Registry, io.Closer, error) {
	reg, rdb, err := cluster.Open(&cfg.Cluster, signaling.LimitsOf(&cfg.Signal), log)
	if err != nil {
		return nil, nil, err
	}
	log.Info("fleet", "node", cfg.Cluster.NodeName(), "redis", cfg.Cluster.Redacted())
	return reg, rdb, nil
}

// announcement is what this node tells the fleet: the TURN URLs an ICE answer would
// carry for it (on its public host), its load and whether it drains.
// live holds the [cluster] keys as last loaded: region and ice_nodes change on a reload.
func announcement(cfg *config.Config, srv *relay.Server, draining *atomic.Bool, live *atomic.Pointer[config.Cluster]) func() cluster.Announcement {
	host := cfg.Signal.PublicHost
	if host == "" {
		host = relay.AdvertisedHost(cfg)
	}
	max := cfg.Limits.TotalAllocations
	return func() cluster.Announcement {
		p := srv.Ports()
		return cluster.Announcement{Region: live.Load().Region, STUN: p.STUN(host), TURN: p.TURN(host),
			Active: srv.AllocationCount(), Max: max, Draining: draining.Load()}
	}
}

// steeredURIs answers {path}ice with the URLs of up to ice_nodes nodes of the fleet
// (own region first, least loaded first, none draining); this node's own URLs use the
// host the request came for, as on a single node. With no node known (Redis down) the
// answer is this node's alone.
func steeredURIs(fleet *cluster.Registry, live *atomic.Pointer[config.Cluster], own func(string) ([]string, []string)) func(string) ([]string, []string) {
	self := live.Load().NodeName()
	return func(host string) (stun, turn []string) {
		c := live.Load()
		nodes := fleet.Steer(c.ICENodes, c.Region)
		if len(nodes) == 0 {
			return own(host)
		}
		for _, a := range nodes {
			if a.Node == self {
				s, t := own(host)
				stun, turn = append(stun, s...), append(turn, t...)
				continue
			}
			stun, turn = append(stun, a.STUN...), append(turn, a.TURN...)
		}
		return stun, turn
	}
}

// clusterRestart lists the [cluster] keys a reload changed that need a restart: all but
// region and ice_nodes, which change live.
func clusterRestart(old, cur *config.Cluster) []string {
	var keys []string
	for _, k := range []struct {
		key  string
		same bool
	}{
		{"cluster.redis", old.Redis == cur.Redis},
		{"cluster.redis_password_file", old.RedisPasswordFile == cur.RedisPasswordFile && old.Password == cur.Password},
		{"cluster.node", old.NodeName() == cur.NodeName()},
	} {
		if !k.same {
			keys = append(keys, k.key)
		}
	}
	return keys
}
