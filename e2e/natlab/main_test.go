package natlab

import (
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestMain reports what was skipped for want of root or a tool (skipnote).
func TestMain(m *testing.M) { skipnote.Main(m, "e2e/natlab") }
