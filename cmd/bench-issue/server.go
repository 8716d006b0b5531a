package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dvrhotline/hotline/server"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
)

// benchServer is the in-process server under test.
type benchServer struct {
	addr      string
	poolConns int32
	logPath   string
	kr        *keyring.Keyring
	db        *postgres.DB
	grpc      *grpcserver.Server
	logFile   *os.File
}

// startServer builds the server as cmd/hotline-server's Main.Run does
// (keyring, staff verifier from the keyring's staff keys, Service, grpc
// server with a Prometheus registry, JSON log), with limits that never
// refuse, and serves it on a loopback port.
func startServer(ctx context.Context, dbURL, tmp string, o *options) (*benchServer, error) {
	s := &benchServer{}
	var err error
	s.kr, err = keyring.Init(filepath.Join(tmp, "keyring"))
	if err != nil {
		return nil, err
	}
	s.logPath = o.serverLog
	if s.logPath == "" {
		s.logPath = filepath.Join(tmp, "server.log")
	}
	s.logFile, err = os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewJSONHandler(s.logFile, nil))

	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(o.poolConns)
	s.poolConns = cfg.MaxConns
	s.db, err = postgres.OpenConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	verifier, err := server.NewStaffVerifier(s.kr.PublicKeys(keyring.PurposeStaff, time.Now(), server.StaffTokenMaxTTL))
	if err != nil {
		return nil, err
	}
	svc := server.NewService(s.db, s.kr)
	svc.Limits = server.Limits{PerDevice: 1e9, PerDeviceWindow: 24 * time.Hour, PerAgent: 1e9, PerAgentWindow: time.Hour}
	svc.Logger = logger
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.grpc, err = grpcserver.New(grpcserver.Config{Service: svc, Verifier: verifier, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	go s.grpc.Serve(l)
	step("server on %s (pool of at most %d connections, log %s)", s.addr, s.poolConns, s.logPath)
	return s, nil
}

// tokens returns one agent token per subject grpc-agent-1..n, signed by
// the keyring's development staff issuer.
func (s *benchServer) tokens(n int) ([]string, error) {
	kid, key := s.kr.StaffSigner()
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.grpc.Shutdown(ctx)
	s.db.Close()
	s.logFile.Close()
}
