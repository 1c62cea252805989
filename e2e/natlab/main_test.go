package natlab

import (
	"os"
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestMain reports what was skipped for want of root or a tool (skipnote).
func TestMain(m *testing.M) {
	code := m.Run()
	skipnote.Report("e2e/natlab")
	os.Exit(code)
}
