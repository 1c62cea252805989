package signaling

import (
	"testing"

	"github.com/relayproject/relay/config"
)

// TestICEBearerScheme: the Authorization scheme is case-insensitive and may be followed
// by more than one space (RFC 7235 2.1); the token itself is compared exactly.
func TestICEBearerScheme(t *testing.T) {
	s := startSignal(t, func(c *config.Signal) { c.APITokens = []string{"tok-one"} })
	for _, tc := range []struct {
		header string
		status int
	}{
		{"Bearer tok-one", 200},
		{"bearer tok-one", 200},
		{"BEARER tok-one", 200},
		{"bEaReR tok-one", 200},
		{"Bearer   tok-one", 200},
		{"Bearer TOK-ONE", 401},
		{"Bearertok-one", 401},
		{"Basic tok-one", 401},
		{"Bearer", 401},
		{"Bearer ", 401},
		{"tok-one", 401},
	} {
		if resp := iceGet(t, s.base+"ice", map[string]string{"Authorization": tc.header}, nil); resp.StatusCode != tc.status {
			t.Errorf("Authorization: %q: %d, want %d", tc.header, resp.StatusCode, tc.status)
		}
	}
}
