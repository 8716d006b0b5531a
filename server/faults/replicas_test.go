package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// serverBin is the hotline-server binary TestMain builds.
var serverBin string

// replica is one `hotline-server serve` process on a fixed loopback port
// (a restarted replica comes back on the same address, as a pod behind its
// Service does), with a plaintext health-only port.
type replica struct {
	t          *testing.T
	i          int
	env        []string
	addr       string
	healthAddr string
	log        *os.File

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	inFlight atomic.Int64

	conn     *grpc.ClientConn
	recovery hotlinev1.RecoveryServiceClient
	devices  hotlinev1.DeviceServiceClient
	health   healthpb.HealthClient
}

// startReplica starts replica i over databaseURL with the keyring dir.
func startReplica(t *testing.T, i int, databaseURL, keyringDir string, extra ...string) *replica {
	t.Helper()
	r := &replica{t: t, i: i,
		addr:       "127.0.0.1:" + strconv.Itoa(freePort(t)),
		healthAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		env: append([]string{"DATABASE_URL=" + databaseURL, "HOTLINE_KEYRING=" + keyringDir,
			"HOTLINE_LIMIT_PER_DEVICE=1000000", "HOTLINE_LIMIT_PER_AGENT=1000000"}, extra...),
	}
	var err error
	r.log, err = os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("replica-%d.log", i)))
	if err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(r.stop)
	r.conn, err = grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	r.recovery = hotlinev1.NewRecoveryServiceClient(r.conn)
	r.devices = hotlinev1.NewDeviceServiceClient(r.conn)
	hc, err := grpc.NewClient(r.healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	r.health = healthpb.NewHealthClient(hc)
	return r
}

// start runs the process and waits for its "serving" log line.
func (r *replica) start() {
	r.t.Helper()
	cmd := exec.Command(serverBin, "serve", "--trust-keyring-staff-issuer", "--listen", r.addr, "--health-listen", r.healthAddr, "--seal-every", "200ms",
		"--shutdown-timeout", "3s")
	cmd.Env = append(os.Environ(), r.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			r.log.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving" {
				once.Do(func() { close(serving) })
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-serving:
	case <-exited:
		r.t.Fatalf("replica %d exited before serving:\n%s", r.i, r.logTail())
	case <-time.After(60 * time.Second):
		r.t.Fatalf("replica %d did not serve within 60s:\n%s", r.i, r.logTail())
	}
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
}

// sigkill kills the process at once, in-flight calls and all.
func (r *replica) sigkill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop ends the process (SIGTERM, then SIGKILL after 10s).
func (r *replica) stop() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	r.log.Close()
}

func (r *replica) logTail() string {
	b, _ := os.ReadFile(r.log.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// status is the replica's readiness ("" service) on its health port.
func (r *replica) status() healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// waitStatus waits up to d for the replica's readiness to become want.
func (r *replica) waitStatus(want healthpb.HealthCheckResponse_ServingStatus, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if r.status() == want {
			return time.Since(start), true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), false
}
