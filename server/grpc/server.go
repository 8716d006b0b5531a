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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
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
	// Limits bound what one client can hold of the server; zero fields
	// take DefaultLimits'.
	Limits Limits
}

// Limits bound calls, streams and connections, so that no client (a
// staff member's script left running, an export nobody reads) holds the
// server's resources for long.
type Limits struct {
	// UnaryTimeout is the server-side deadline of every unary call (a
	// client's earlier deadline still applies).
	UnaryTimeout time.Duration
	// StreamTimeout is the server-side deadline of every streaming call
	// (an import, an export).
	StreamTimeout time.Duration
	// SendTimeout is how long one message of a server stream may wait for
	// the client to read: an export whose client stops reading is ended
	// after it, and its database connection freed.
	SendTimeout time.Duration
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	MaxConcurrentStreams uint32
	// MaxConnections bounds the connections Serve accepts at once; the
	// next wait in the listen queue.
	MaxConnections int
	// IdleTimeout closes a connection with no call for that long.
	IdleTimeout time.Duration
}

// DefaultLimits are the limits of a server whose Config sets none.
var DefaultLimits = Limits{UnaryTimeout: 30 * time.Second, StreamTimeout: time.Hour, SendTimeout: 30 * time.Second,
	MaxConcurrentStreams: 64, MaxConnections: 1024, IdleTimeout: 15 * time.Minute}

// withDefaults returns l with its zero fields taken from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.UnaryTimeout <= 0 {
		l.UnaryTimeout = d.UnaryTimeout
	}
	if l.StreamTimeout <= 0 {
		l.StreamTimeout = d.StreamTimeout
	}
	if l.SendTimeout <= 0 {
		l.SendTimeout = d.SendTimeout
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	return l
}

// Server is a ready-to-serve gRPC server.
type Server struct {
	grpc       *grpc.Server
	health     *health.Server
	healthOnly *grpc.Server // ServeHealth's plaintext server
	maxConns   int
}

// New builds the server: the hotline.v1 services, health (every
// service SERVING) and reflection, behind the interceptor chain
// metrics -> logging -> deadline -> auth -> panic recovery.
//
// Health needs no token (load balancers and probes call it). Reflection
// needs a staff token of any role: the API's shape is no secret (it is in
// the repository), but nothing beyond health answers someone who holds no
// token. grpcurl sends its -H headers with its reflection requests too:
//
//	grpcurl -H "authorization: Bearer $HOTLINE_TOKEN" -plaintext 127.0.0.1:7443 list
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
	lim := cfg.Limits.withDefaults()
	unary, stream := chains(log, cfg.Verifier, m, lim)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(1 << 20),
		grpc.MaxConcurrentStreams(lim.MaxConcurrentStreams),
		// Clients may ping to keep a connection through a load balancer,
		// but not more than once every 30 s, nor with no call open: a
		// client that does is sent GOAWAY. An idle connection is closed.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: lim.IdleTimeout, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		// Reused handler goroutines: a fresh goroutine per call grows its
		// stack on every issue (about 6% of the issue path's CPU). A call
		// finding every worker busy gets a fresh one, so there are as many
		// as one connection may have calls in flight (MaxConcurrentStreams'
		// default), not only 4 per CPU: at 16 concurrent issuers, half
		// the calls grew a new stack (5% of the server's CPU).
		grpc.NumStreamWorkers(uint32(max(64, 4*runtime.GOMAXPROCS(0)))),
		// Fixed flow-control windows: with the default dynamic ones
		// (BDP estimation) the server sends a PING and a WINDOW_UPDATE
		// after every request and reads the client's PING ack, about 2.5
		// read and 0.5 write syscalls per issuance. 1 MiB per stream and
		// per connection is a MaxRecvMsgSize message in flight, more than
		// an import's batches need on a LAN (the dynamic windows could grow
		// to 16 MiB).
		grpc.StaticStreamWindowSize(1 << 20),
		grpc.StaticConnWindowSize(1 << 20),
	}, cfg.ServerOptions...)
	gs := grpc.NewServer(opts...)

	h := &handlers{svc: cfg.Service, log: log, sendTimeout: lim.SendTimeout}
	hotlinev1.RegisterDeviceServiceServer(gs, deviceServer{handlers: h})
	hotlinev1.RegisterRecoveryServiceServer(gs, recoveryServer{handlers: h})
	hotlinev1.RegisterAuditServiceServer(gs, auditServer{handlers: h})
	hotlinev1.RegisterKeyServiceServer(gs, keyServer{handlers: h})
	hotlinev1.RegisterMailServiceServer(gs, mailServer{handlers: h})

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
	return &Server{grpc: gs, health: hs, healthOnly: ho, maxConns: lim.MaxConnections}, nil
}

// Serve accepts connections on l, at most Limits.MaxConnections at once,
// until Stop or GracefulStop.
func (s *Server) Serve(l net.Listener) error {
	return s.grpc.Serve(netutil.LimitListener(l, s.maxConns))
}

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
