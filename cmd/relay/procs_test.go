package main

import (
	"runtime"
	"strconv"
	"testing"
)

func TestSetProcs(t *testing.T) {
	was := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(8)
	if got := setProcs(); got != 4 || runtime.GOMAXPROCS(0) != 4 {
		t.Fatalf("8 CPUs: setProcs = %d, GOMAXPROCS = %d; want half, 4", got, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(1)
	if got := setProcs(); got != 1 {
		t.Fatalf("1 CPU: setProcs = %d, want 1", got)
	}

	// An operator's GOMAXPROCS wins (the runtime applied it at start; relay leaves it).
	t.Setenv("GOMAXPROCS", strconv.Itoa(3))
	runtime.GOMAXPROCS(3)
	if got := setProcs(); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Fatalf("GOMAXPROCS=3: setProcs = %d, GOMAXPROCS = %d", got, runtime.GOMAXPROCS(0))
	}
}
