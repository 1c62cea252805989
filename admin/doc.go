// Package admin owns operator control of a running relay: the admin HTTP API
// ([admin] listen), and the state behind it and behind the TURN server's
// relay.Control: revocations, byte usage against [limits] user_bytes_per_day, the
// last refusals and the event stream.
//
// What must outlive the process sits behind the small Store interface: a directory
// ([admin] state_dir) on a single node (NewFileStore), or Redis in a fleet
// (cluster.StateStore), so that a revocation made on one node ends allocations on every
// node within a second and budgets count every node's bytes.
//
// Per-user data lives here and in the API only, never in Prometheus labels.
package admin
