package main

import (
	"slices"
	"testing"

	"github.com/relayproject/relay/config"
)

// Every [cluster] key a reload changes but region and ice_nodes is named as needing a
// restart; the password's content counts as the file's.
func TestClusterRestartKeys(t *testing.T) {
	old := config.Cluster{Redis: "redis://127.0.0.1:6379/0", RedisPasswordFile: "/p", Password: "a", Node: "n1", Region: "eu", ICENodes: 2}
	if got := clusterRestart(&old, &old); len(got) != 0 {
		t.Errorf("unchanged: %v", got)
	}
	cur := old
	cur.Password = "b"
	cur.ICENodes = 3
	if got := clusterRestart(&old, &cur); !slices.Equal(got, []string{"cluster.redis_password_file"}) {
		t.Errorf("changed password and ice_nodes (live): %v", got)
	}
	cur = old
	cur.Redis, cur.Node, cur.Region = "", "n2", ""
	if got := clusterRestart(&old, &cur); !slices.Equal(got, []string{"cluster.redis", "cluster.node"}) {
		t.Errorf("changed redis, node, region (live): %v", got)
	}
}
