package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dvrhotline/hotline/cmd/internal/wiring"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
)

// benchServer is the in-process server under test, built by
// cmd/internal/wiring exactly as `hotline-server serve` builds it, with a
// fresh keyring and limits that never refuse. Its audit sealer runs as
// serve runs it during the gRPC phases; the benchmark pauses it for the
// pgbench phases and seals their backlog between phases (seal).
type benchServer struct {
	*wiring.Server
	poolConns   int32
	logPath     string
	logFile     *os.File
	stopWatch   func()
	stopSealing func() // nil while the sealer is paused
}

// neverRefuse are limits no phase reaches: the benchmark measures issuing,
// not the refusals.
var neverRefuse = server.Limits{PerDevice: 1e9, PerDeviceWindow: 24 * time.Hour, PerAgent: 1e9, PerAgentWindow: time.Hour}

// startServer opens the server through wiring.Open and serves it on a
// loopback port, with its keyring watcher; the sealer starts with
// startSealer.
func startServer(ctx context.Context, dbURL, tmp string, o *options) (*benchServer, error) {
	s := &benchServer{poolConns: int32(o.poolConns), logPath: o.serverLog}
	if s.logPath == "" {
		s.logPath = filepath.Join(tmp, "server.log")
	}
	var err error
	s.logFile, err = os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.Server, err = wiring.Open(ctx, wiring.Config{
		KeyringDir: filepath.Join(tmp, "keyring"), CreateKeyring: true,
		DatabaseURL: dbURL, MaxConns: s.poolConns, Listen: "127.0.0.1:0",
		TrustKeyringStaff: true, DevStaff: true, // its own tokens, from a temporary keyring
		Limits: neverRefuse, ShutdownTimeout: 5 * time.Second,
		SealEvery: wiring.DefaultSealEvery, KeyringPoll: wiring.DefaultKeyringPoll,
		Logger: wiring.NewLogger(s.logFile), GCPercent: wiring.GCPercent(os.Getenv("GOGC")),
	})
	if err != nil {
		s.logFile.Close()
		return nil, err
	}
	go s.Serve()
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.WatchKeyring(wctx)
	}()
	s.stopWatch = func() { stop(); <-done }
	step("server on %s (built as serve builds it: pool of at most %d connections as %s, log %s)", s.Addr(), s.poolConns, audit.ServiceRole, s.logPath)
	return s, nil
}

// startSealer runs the audit sealer every wiring.DefaultSealEvery, as
// serve does, until stopSealer.
func (s *benchServer) startSealer() {
	if s.stopSealing != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunSealer(ctx)
	}()
	s.stopSealing = func() { cancel(); <-done }
}

// stopSealer pauses the sealer started by startSealer.
func (s *benchServer) stopSealer() {
	if s.stopSealing != nil {
		s.stopSealing()
		s.stopSealing = nil
	}
}

// seal seals every committed event with the server's own sealer (paused
// meanwhile), so that a phase starts with no backlog.
func (s *benchServer) seal(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.Sealer.SealOnce(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// tokens returns one agent token per subject grpc-agent-1..n, signed by
// the keyring's development staff issuer.
func (s *benchServer) tokens(n int) ([]string, error) {
	kid, key := s.Keyring.StaffSigner()
	iss, err := server.NewStaffIssuer(kid, key)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i := range out {
		out[i], err = iss.Issue(fmt.Sprintf("grpc-agent-%d", i+1), server.RoleAgent, 2*time.Hour)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *benchServer) close() {
	s.stopSealer()
	s.stopWatch()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	s.Close()
	s.logFile.Close()
}
