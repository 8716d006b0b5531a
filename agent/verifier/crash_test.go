package verifier

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashEnv, when set, makes the test binary a crash-test child: it holds
// the directory of the state and of codes.txt.
const crashEnv = "HOTLINE_AGENT_CRASH_CHILD"

// crashLockout keeps the lockout out of the way: a kill between recording
// an attempt and taking it back leaves a failure counted, and many kills in
// a row must not lock the parent's checks out.
var crashLockout = Lockout{Threshold: 1 << 30, Base: time.Minute, Max: time.Hour}

// crashNow is the time every process verifies at: all codes are valid.
var crashNow = t0.Add(7 * time.Hour)

// TestCrashWhileSavingNeverReacceptsAUsedCode kills a child process that
// accepts one code after another (two state saves each) with SIGKILL at
// random instants, many times. After every kill the state must load, and
// every code the child reported as accepted must be refused.
//
// SIGKILL tests the process dying mid-save (a torn write, a rename half
// done, a stale temp file), not the page cache being lost; fsync of the
// file and the directory covers that part, by construction.
func TestCrashWhileSavingNeverReacceptsAUsedCode(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(t, dir)
		return
	}
	iterations := 200
	if testing.Short() {
		iterations = 20
	}
	dir := t.TempDir()
	// Codes in increasing (slot, seq8) order: 250 per slot.
	var codes []string
	for i := 0; i < 10000; i++ {
		codes = append(codes, mintCode(t, testSerial, t0.Add(time.Duration(i/250)*10*time.Minute), int64(i%250+1)))
	}
	if err := os.WriteFile(filepath.Join(dir, "codes.txt"), []byte(strings.Join(codes, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	parent := newCrashVerifier(t, stateDir)

	next, total, killed := 0, 0, 0
	for it := 0; it < iterations && next < len(codes); it++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWhileSavingNeverReacceptsAUsedCode$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, "HOTLINE_AGENT_CRASH_START="+strconv.Itoa(next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan []string, 1)
		go func() {
			var ls []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				ls = append(ls, sc.Text())
			}
			lines <- ls
		}()
		time.Sleep(time.Duration(rand.Int64N(int64(40 * time.Millisecond))))
		if cmd.Process.Kill() == nil {
			killed++
		}
		got := <-lines
		cmd.Wait()

		var accepted []int
		for _, l := range got {
			switch {
			case strings.HasPrefix(l, "A "):
				i, _ := strconv.Atoi(l[2:])
				accepted = append(accepted, i)
			case strings.HasPrefix(l, "E "):
				t.Fatalf("iteration %d: child: %s", it, l)
			}
		}
		// The state loads, and nothing the child accepted is accepted again.
		for _, i := range accepted {
			r, _ := parent.Verify(codes[i], crashNow)
			if r.Outcome != AlreadyUsed {
				t.Fatalf("iteration %d: code %d, accepted by the killed child, is now %s: %s", it, i, r.Outcome, r.Message)
			}
			next = max(next, i+1)
		}
		if next > 0 {
			// The last accepted code before this iteration, too.
			if r, _ := parent.Verify(codes[next-1], crashNow); r.Outcome != AlreadyUsed {
				t.Fatalf("iteration %d: code %d is now %s: %s", it, next-1, r.Outcome, r.Message)
			}
		}
		total += len(accepted)
	}
	t.Logf("%d children killed, %d codes accepted and then refused as used", killed, total)
	if total == 0 {
		t.Fatal("no child accepted anything: the test tested nothing")
	}
}

func newCrashVerifier(tb testing.TB, dir string) *Verifier {
	v, err := New(Config{Serial: testSerial, Key: deviceKey(tb, testSerial), Trust: trustSet(), StateDir: dir, Lockout: crashLockout})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// crashChild accepts codes from HOTLINE_AGENT_CRASH_START on, printing
// "A i" after each acceptance returned, until killed.
func crashChild(t *testing.T, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "codes.txt"))
	if err != nil {
		t.Fatal(err)
	}
	codes := strings.Split(string(b), "\n")
	start, _ := strconv.Atoi(os.Getenv("HOTLINE_AGENT_CRASH_START"))
	v := newCrashVerifier(t, filepath.Join(dir, "state"))
	for i := start; i < len(codes); i++ {
		// A request code saved between acceptances: the version 2 fields
		// (nonce, boot, monotonic times, learnt time) are torn too.
		if _, r := v.Request(Clock{Now: crashNow, Mono: Mono{Uptime: crashNow.Sub(time.Unix(0, 0))}}); r.Outcome != Accepted {
			fmt.Fprintf(os.Stdout, "E %d request %s: %s\n", i, r.Outcome, r.Message)
			os.Exit(3)
		}
		r, _ := v.Verify(codes[i], crashNow)
		switch r.Outcome {
		case Accepted:
			fmt.Fprintf(os.Stdout, "A %d\n", i)
		case AlreadyUsed: // accepted by a child killed before it could say so
		default:
			fmt.Fprintf(os.Stdout, "E %d %s: %s\n", i, r.Outcome, r.Message)
			os.Exit(3)
		}
	}
	os.Exit(0)
}
