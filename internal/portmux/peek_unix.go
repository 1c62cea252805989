//go:build unix

package portmux

import "golang.org/x/sys/unix"

// peek reads what waits on the socket without taking it.
func peek(fd uintptr, b []byte) (int, error) {
	n, _, err := unix.Recvfrom(int(fd), b, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return n, err
}
