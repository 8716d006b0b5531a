package verifier

import (
	"sync"
	"testing"
)

// TestRefusedDoubleUseByConcurrentVerifications: the same code entered
// twice at once (two UI sessions, a retry racing the first call) is accepted
// exactly once: the state lock serialises load-check-save.
func TestRefusedDoubleUseByConcurrentVerifications(t *testing.T) {
	dir := t.TempDir()
	code := mintCode(t, testSerial, t0, 5)
	const n = 8
	outcomes := make([]Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		v := newVerifier(t, dir) // each its own lock descriptor, like a process
		wg.Go(func() {
			r, _ := v.Verify(code, t0)
			outcomes[i] = r.Outcome
		})
	}
	wg.Wait()
	accepted := 0
	for _, o := range outcomes {
		switch o {
		case Accepted:
			accepted++
		case AlreadyUsed:
		default:
			t.Fatalf("outcome %s", o)
		}
	}
	if accepted != 1 {
		t.Fatalf("accepted %d times: %v", accepted, outcomes)
	}
}
