package web

import (
	"os"
	"testing"

	"github.com/relayproject/relay/internal/skipnote"
)

// TestMain reports the tests skipped for want of node (skipnote).
func TestMain(m *testing.M) {
	code := m.Run()
	skipnote.Report("web")
	os.Exit(code)
}
