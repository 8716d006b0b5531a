//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package state

import (
	"errors"
	"os"
	"time"
)

// lockFile is implemented with flock(2) only: the agent runs on Linux.
func lockFile(*os.File, time.Duration) error {
	return errors.New("state lock: not implemented on this operating system (the agent needs flock(2))")
}
