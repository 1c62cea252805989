// Package poll is how tests wait: a condition checked every few milliseconds until it
// holds or a deadline passes, never a fixed sleep.
package poll

import (
	"testing"
	"time"
)

// Until checks cond every 5 ms until it holds; past within the test fails, naming what
// it waited for.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
