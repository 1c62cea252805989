//go:build !linux

package natlab

import "testing"

// TestNATLab needs Linux network namespaces and iptables.
func TestNATLab(t *testing.T) { t.Skip("the NAT lab needs Linux (network namespaces, iptables)") }
