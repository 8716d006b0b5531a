// Package grpcserver is the gRPC transport of the central service: it
// serves the hotline.v1 API (proto/hotline/v1) over a server.Service,
// authenticates staff bearer tokens, maps server errors to gRPC statuses in
// one table, and registers gRPC health and reflection.
//
// The package adapts; it decides nothing. Policy lives in server.Service,
// persistence in server/postgres.
package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

// Verifier checks a staff bearer token; server.StaffVerifier is one.
type Verifier interface {
	Verify(token string) (server.Actor, error)
}

// Config is what New needs.
type Config struct {
	// Service is the domain service the handlers call (required).
	Service *server.Service
	// Verifier checks staff tokens (required).
	Verifier Verifier
	// Logger receives request and error logs (slog.Default when nil).
	// Requests' payloads are never logged: they carry codes and grants.
	Logger *slog.Logger
	// Registerer receives the request metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// ServerOptions are added to the gRPC server's, e.g.
	// grpc.Creds(credentials.NewTLS(cfg)) for a non-loopback listener.
	ServerOptions []grpc.ServerOption
	// CallTimeout bounds every unary call, and so every database call and
	// pool acquire it makes, when the client asks for no deadline or a
	// later one (DefaultCallTimeout if 0).
	CallTimeout time.Duration
}

// Server is a ready-to-serve gRPC server.
type Server struct {
	grpc       *grpc.Server
	health     *health.Server
	healthOnly *grpc.Server // ServeHealth's plaintext server
}

// New builds the server: the four hotline.v1 services, health (every
// service SERVING) and reflection, behind the interceptor chain
// metrics -> logging -> auth -> panic recovery.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Verifier == nil {
		return nil, errors.New("grpcserver: Config.Service and Config.Verifier are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	unary, stream := chains(log, cfg.Verifier, m)
	unary = append([]grpc.UnaryServerInterceptor{callTimeout(cfg.CallTimeout)}, unary...)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(1 << 20),
		// Reused handler goroutines: a fresh goroutine per call grows its
		// stack on every issue (about 6% of the issue path's CPU).
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
	}, cfg.ServerOptions...)
	gs := grpc.NewServer(opts...)

	h := &handlers{svc: cfg.Service, log: log}
	hotlinev1.RegisterDeviceServiceServer(gs, deviceServer{handlers: h})
	hotlinev1.RegisterRecoveryServiceServer(gs, recoveryServer{handlers: h})
	hotlinev1.RegisterAuditServiceServer(gs, auditServer{handlers: h})
	hotlinev1.RegisterKeyServiceServer(gs, keyServer{handlers: h})

	hs := health.NewServer()
	for name := range gs.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	ho := grpc.NewServer()
	healthpb.RegisterHealthServer(ho, hs)
	return &Server{grpc: gs, health: hs, healthOnly: ho}, nil
}

// Serve accepts connections on l until Stop or GracefulStop.
func (s *Server) Serve(l net.Listener) error { return s.grpc.Serve(l) }

// GRPC returns the underlying *grpc.Server.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Shutdown reports NOT_SERVING to health checks, then stops gracefully,
// letting in-flight calls finish; when ctx ends first it stops at once.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	defer s.healthOnly.Stop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// Stop closes every connection at once.
func (s *Server) Stop() {
	s.grpc.Stop()
	s.healthOnly.Stop()
}

// IsLoopback reports whether addr ("host:port", or a host alone) names a
// loopback host: the one rule by which the server refuses to listen, and
// hotlinectl to dial, in plaintext anywhere else.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
