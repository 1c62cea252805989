package web

import (
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestMain reports the tests skipped for want of node (skipnote).
func TestMain(m *testing.M) { skipnote.Main(m, "web") }
