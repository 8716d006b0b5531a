//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package state

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock on f, polling so that a verification
// stuck elsewhere turns into ErrBusy rather than a hang.
func lockFile(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return fmt.Errorf("state lock: %w", err)
		case time.Now().After(deadline):
			return fmt.Errorf("%w (waited %s)", ErrBusy, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
