//go:build !linux

// Command bench measures relay against coturn and the PeerJS reference server. It reads
// /proc and uses Linux system calls (recvmmsg, sendmmsg, epoll): it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: Linux only (it reads /proc and uses recvmmsg, sendmmsg and epoll)")
	os.Exit(2)
}
