// Package cluster owns what a fleet of relay nodes shares through Redis: which node
// holds which PeerJS id (a lease per id, refreshed while the peer is connected),
// messages routed from a peer on one node to a peer on another (a pub/sub channel per
// node), and messages held for absent ids (fleet-wide queues with the same byte caps
// as one node's). It implements signaling.Registry, so the signaling server does not
// know whether it runs alone or in a fleet.
//
// Routing between two peers on the same node never touches Redis. When Redis cannot be
// reached, peers already on a node keep talking to each other, new ids are registered
// on this node only (and claimed in Redis when it is back), and a message for a peer
// that is not on this node gets EXPIRE at once; one log line says the backend is down
// and one that it is back.
package cluster
