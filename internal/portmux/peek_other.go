//go:build !unix

package portmux

import "errors"

// peek needs MSG_PEEK: a plain TCP port shared with HTTP is for Unix systems.
func peek(uintptr, []byte) (int, error) {
	return 0, errors.New("portmux: a plain TCP port shared by TURN and HTTP needs a Unix system")
}
