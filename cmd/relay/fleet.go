package main

import (
	"io"
	"log/slog"

	"github.com/relayproject/relay/cluster"
	"github.com/relayproject/relay/config"
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

// clusterRestart lists the [cluster] keys a reload changed: none of them can change
// while running yet.
func clusterRestart(old, cur *config.Cluster) []string {
	var keys []string
	for _, k := range []struct {
		key  string
		same bool
	}{
		{"cluster.redis", old.Redis == cur.Redis},
		{"cluster.redis_password_file", old.RedisPasswordFile == cur.RedisPasswordFile && old.Password == cur.Password},
		{"cluster.node", old.NodeName() == cur.NodeName()},
		{"cluster.region", old.Region == cur.Region},
		{"cluster.ice_nodes", old.ICENodes == cur.ICENodes},
	} {
		if !k.same {
			keys = append(keys, k.key)
		}
	}
	return keys
}
