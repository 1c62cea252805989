package cluster

import (
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/signaling"
)

// Open connects to the [cluster] redis and returns this node's Registry. It does not
// wait for Redis: a node whose backend is down starts alone and joins when it answers.
// Close the Registry, then the client it returns.
func Open(c *config.Cluster, lim signaling.Limits, log *slog.Logger) (*Registry, *redis.Client, error) {
	rdb, err := newClient(c)
	if err != nil {
		return nil, nil, err
	}
	r, err := New(Options{Client: rdb, Node: c.NodeName(), Region: c.Region, Limits: lim, Logger: log})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return r, rdb, nil
}

// newClient makes a client for [cluster] redis (the Registry's, and the operator
// state's: StateStore).
func newClient(c *config.Cluster) (*redis.Client, error) {
	opts, err := redis.ParseURL(c.Redis)
	if err != nil {
		// ParseURL's errors can quote the URL; config has checked it, so this is rare.
		return nil, errors.New("cluster.redis: not a usable Redis URL: " + c.Redacted())
	}
	if c.Password != "" {
		opts.Password = c.Password
	}
	// Short timeouts and one retry: a message must fail fast when Redis is away, never
	// hang a peer's connection.
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, time.Second, time.Second
	opts.MaxRetries = 1
	// Few connections with small buffers: one node's calls are short (a lease claim, a
	// queue script), the publisher pipelines on one connection and the subscription has
	// its own. go-redis's defaults (10 connections per CPU with 64 KiB of buffers each,
	// pipeline connections with 256 KiB) grew a node by 1-2 MiB in a burst of new peers.
	opts.PoolSize = 4
	opts.ReadBufferSize, opts.WriteBufferSize = 8<<10, 8<<10
	opts.PipelinePoolSize = 2
	opts.PipelineReadBufferSize, opts.PipelineWriteBufferSize = 32<<10, 32<<10
	return redis.NewClient(opts), nil
}
