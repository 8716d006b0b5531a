// Package wiring builds the central service from its parts: the keyring
// (reloaded while serving), the database pool working as the audit service
// role, the store, the domain service with its audit log and limits, the
// staff-token verifier, the gRPC server with its Prometheus metrics, and
// the audit sealer. `hotline-server serve` and cmd/bench-issue both build
// the server here, so that the benchmark measures what production runs.
//
// The package wires; it decides nothing that server/ or its adapters
// decide. Flags and environment stay in the commands.
package wiring

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
)

// DefaultKeyringPoll is how often `hotline-server serve` looks at the
// keyring file for a change unless told otherwise (--keyring-poll).
const DefaultKeyringPoll = 30 * time.Second

// DefaultSealEvery is how often `hotline-server serve` runs the audit
// sealer unless told otherwise (--seal-every).
const DefaultSealEvery = time.Second

// DefaultGCPercent is the garbage collector's pace `hotline-server serve`
// sets (as GOGC=400 would) unless the GOGC environment variable gives one.
// The server's live heap is small (about 3 MB while issuing) and an
// issuance allocates about 15 KB, mostly in gRPC and pgx: at Go's default
// of 100 the collector then runs about four times a second at 1,000
// issuances/s, which make bench-issue measured at about 5% of the
// server's CPU. At 400 it runs a quarter as often, for a heap of about
// five times the live one (some 15 MB) between collections. GOMEMLIMIT,
// when set, still bounds the heap.
const DefaultGCPercent = 400

// GCPercent is Config.GCPercent for a server whose GOGC environment
// variable is gogc: DefaultGCPercent when it is empty, else 0 (the
// runtime keeps what GOGC says).
func GCPercent(gogc string) int {
	if gogc != "" {
		return 0
	}
	return DefaultGCPercent
}

// Config is what Open builds a server from.
type Config struct {
	// KeyringDir is the keyring folder (required).
	KeyringDir string
	// CreateKeyring creates a keyring when the folder has none (--dev).
	CreateKeyring bool
	// DatabaseURL is the PostgreSQL URL (required). The server migrates
	// it, then works as audit.ServiceRole.
	DatabaseURL string
	// MaxConns caps the pool (0: pgx's default, or the URL's
	// pool_max_conns).
	MaxConns int32
	// Listen is the gRPC address; "127.0.0.1:0" picks a free port.
	Listen string
	// MetricsListen serves Prometheus metrics on /metrics; empty disables.
	MetricsListen string
	// HealthListen serves gRPC health alone, in plaintext, for probes
	// that cannot speak TLS (Kubernetes' grpc probe); empty disables.
	HealthListen string
	// TLSCert and TLSKey enable TLS; required off loopback unless
	// InsecurePlaintext.
	TLSCert, TLSKey string
	// InsecurePlaintext allows plaintext on a non-loopback address.
	InsecurePlaintext bool
	// StaffJWKS is a JWK set file of staff-token issuer keys to trust;
	// empty trusts the keyring's own development issuer (its staff keys,
	// reloaded with it), which only TrustKeyringStaff allows: whoever holds
	// the keyring then mints staff tokens of any role.
	StaffJWKS string
	// TrustKeyringStaff allows an empty StaffJWKS (development, tests);
	// DevStaff says it is a development server, so that trusting the
	// keyring is not warned about.
	TrustKeyringStaff, DevStaff bool
	// Limits are the issuance limits.
	Limits server.Limits
	// ShutdownTimeout bounds Run's graceful stop before connections are cut.
	ShutdownTimeout time.Duration
	// SealEvery is how often the audit sealer runs (required).
	SealEvery time.Duration
	// KeyringPoll is how often the keyring file is checked for a change;
	// 0 reloads only on SIGHUP.
	KeyringPoll time.Duration
	// AuditWitness is a folder outside the database where the sealer
	// publishes every checkpoint (audit.DirWitness); empty publishes none.
	AuditWitness string
	// AuditDatabaseURL is the sealer's own login (a member of
	// audit.SealerRole); empty seals through DatabaseURL.
	AuditDatabaseURL string
	// Logger is the structured log (required; NewLogger makes the
	// server's).
	Logger *slog.Logger
	// GCPercent, when not 0, is set as the process's GC percent
	// (debug.SetGCPercent) by Open; serve passes GCPercent's.
	GCPercent int
}

// Server is a built, not yet serving, central service.
type Server struct {
	// Keyring is the key material in use; WatchKeyring reloads it.
	Keyring *keyring.Live
	// DB is the store, its pool working as audit.ServiceRole.
	DB *postgres.DB
	// Service is the domain service the gRPC handlers call.
	Service *server.Service
	// Sealer links committed audit events into the signed chain.
	Sealer   *audit.Sealer
	sealPool *pgxpool.Pool
	// Registry holds the server's Prometheus metrics.
	Registry *prometheus.Registry

	cfg      Config
	tls      bool
	staff    *staffVerifier // nil when staff keys come from a JWK set file
	reloads  *prometheus.CounterVec
	master   prometheus.Gauge
	stamp    fileStamp      // the keyring file as last loaded
	hup      chan os.Signal // SIGHUP, from Open on: none is lost before WatchKeyring
	grpc     *grpcserver.Server
	listener net.Listener
	metricsL net.Listener
	healthL  net.Listener
	metrics  *http.Server
}

// Open checks cfg, opens the keyring, migrates the database, connects as
// the service role (refusing a role that could change the audit log),
// builds the service and the gRPC server, and listens. Nothing is served
// before Run (or Serve). On an error, what was opened is closed.
func Open(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		return nil, errors.New("wiring: Config.Logger is required")
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("no database: pass --database-url or set DATABASE_URL")
	}
	if cfg.KeyringDir == "" {
		return nil, errors.New("no keyring: pass --keyring DIR or set HOTLINE_KEYRING (`hotline-server keys init` creates one; --dev creates it for you)")
	}
	if cfg.SealEvery <= 0 {
		return nil, fmt.Errorf("seal interval %s: expected a positive duration", cfg.SealEvery)
	}
	if cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	s := &Server{cfg: cfg, tls: cfg.TLSCert != "" || cfg.TLSKey != ""}
	if !s.tls && !netaddr.IsLoopback(cfg.Listen) && !cfg.InsecurePlaintext {
		return nil, fmt.Errorf("refusing plaintext gRPC on %s, which is not a loopback address: pass --tls-cert and --tls-key (or --insecure-plaintext behind a TLS-terminating proxy)", cfg.Listen)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	log := cfg.Logger

	// The file's stamp is taken before it is read: a change made while it
	// is opened is seen at the first poll.
	s.stamp = stampOf(filepath.Join(cfg.KeyringDir, keyring.FileName))
	var kr *keyring.Keyring
	if cfg.CreateKeyring {
		var created bool
		kr, created, err = keyring.OpenOrInit(cfg.KeyringDir)
		if created {
			log.Info("created a development keyring", "dir", cfg.KeyringDir)
		}
	} else {
		kr, err = keyring.Open(cfg.KeyringDir)
	}
	if err != nil {
		return nil, err
	}
	s.Keyring = keyring.NewLive(kr)
	s.hup = make(chan os.Signal, 1)
	signal.Notify(s.hup, syscall.SIGHUP)

	if err := s.openDB(ctx); err != nil {
		return nil, err
	}
	verifier, err := s.staffVerifier()
	if err != nil {
		return nil, err
	}

	svc := server.NewService(s.DB, s.Keyring)
	svc.Approvals = s.DB
	// Verify and checkpoints trust every audit key ever used: the log they
	// signed does not expire with a rotation.
	trustedAudit := func() map[string]ed25519.PublicKey {
		return s.Keyring.PublicKeys(keyring.PurposeAudit, time.Now(), audit.TrustForever)
	}
	var witness audit.Witness
	if cfg.AuditWitness != "" {
		witness = audit.DirWitness{Dir: cfg.AuditWitness}
	}
	svc.AuditLog = &audit.Log{DB: s.DB.Pool(), Trusted: trustedAudit, Witness: witness}
	svc.Limits = cfg.Limits
	svc.Logger = log
	s.Service = svc

	// The sealer signs with the audit key in use when the server starts; a
	// rotated audit key signs from the next start (both stay trusted).
	auditKID, auditKey := s.Keyring.AuditSigner()
	sealDB := audit.DB(s.DB.Pool())
	if cfg.AuditDatabaseURL != "" {
		if s.sealPool, err = pgxpool.New(ctx, cfg.AuditDatabaseURL); err != nil {
			return nil, fmt.Errorf("audit database URL: %w", err)
		}
		sealDB = s.sealPool
	}
	s.Sealer = audit.NewSealer(sealDB, auditKID, auditKey)
	s.Sealer.Logger, s.Sealer.Witness, s.Sealer.Trusted = log, witness, trustedAudit

	s.Registry = prometheus.NewRegistry()
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.registerKeyringMetrics()
	var opts []grpc.ServerOption
	if s.tls {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	s.grpc, err = grpcserver.New(grpcserver.Config{Service: svc, Verifier: verifier, Logger: log, Registerer: s.Registry, ServerOptions: opts})
	if err != nil {
		return nil, err
	}

	if s.listener, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, err
	}
	if cfg.HealthListen != "" {
		if s.healthL, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			return nil, fmt.Errorf("health: %w", err)
		}
	}
	if cfg.MetricsListen != "" {
		if s.metricsL, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
		s.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	log.Info("serving", "addr", s.Addr(), "tls", s.tls, "key_generation", s.Keyring.CurrentGeneration(),
		"limits_per_device", cfg.Limits.PerDevice, "limits_per_agent", cfg.Limits.PerAgent)
	return s, nil
}

// openDB migrates, then opens the pool as the service role: it may insert
// and read audit events but never change or delete them. It refuses a role
// that could.
func (s *Server) openDB(ctx context.Context) error {
	if err := postgres.Migrate(ctx, s.cfg.DatabaseURL); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	if s.cfg.MaxConns > 0 {
		pcfg.MaxConns = s.cfg.MaxConns
	}
	pcfg.AfterConnect = audit.SetServiceRole
	if s.DB, err = postgres.OpenConfig(ctx, pcfg); err != nil {
		return err
	}
	if err := audit.CheckServiceRole(ctx, s.DB.Pool()); err != nil {
		return err
	}
	var login string
	var super bool
	if err := s.DB.Pool().QueryRow(ctx, `SELECT session_user::text, rolsuper FROM pg_roles WHERE rolname = session_user`).Scan(&login, &super); err == nil && super {
		s.cfg.Logger.Warn("the database login is a superuser: the server works as "+audit.ServiceRole+
			", but a superuser login could leave that role; in production connect as a login role that is only a member of "+audit.ServiceRole,
			"login", login)
	}
	return nil
}

// staffVerifier trusts the JWK set file when one is configured, else the
// keyring's staff keys, rebuilt on every keyring reload.
func (s *Server) staffVerifier() (grpcserver.Verifier, error) {
	if s.cfg.StaffJWKS != "" {
		b, err := os.ReadFile(s.cfg.StaffJWKS)
		if err != nil {
			return nil, fmt.Errorf("staff JWK set: %w", err)
		}
		return server.NewStaffVerifierJWKS(b)
	}
	if !s.cfg.TrustKeyringStaff {
		return nil, errors.New("no --staff-jwks: give the JWK set of the staff identity provider (HOTLINE_STAFF_JWKS); " +
			"trusting the keyring's development staff issuer (anyone holding the keyring mints tokens of any role) needs --dev or --trust-keyring-staff-issuer")
	}
	if !s.cfg.DevStaff {
		s.cfg.Logger.Warn("trusting the keyring's development staff issuer: whoever holds the keyring can mint staff tokens of any role; use --staff-jwks in production")
	}
	s.staff = &staffVerifier{}
	if err := s.staff.load(s.Keyring.Keyring()); err != nil {
		return nil, err
	}
	return s.staff, nil
}

// Addr returns the gRPC listening address.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// TLS says whether the gRPC listener speaks TLS.
func (s *Server) TLS() bool { return s.tls }

// Run serves until ctx ends: gRPC, the metrics and health endpoints, the
// audit sealer every Config.SealEvery, the keyring watcher (WatchKeyring)
// and the database watcher that sets readiness (every second). Then it
// stops gracefully within Config.ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopBG()
		wg.Wait()
	}()
	wg.Go(func() { s.RunSealer(bg) })
	wg.Go(func() { s.WatchKeyring(bg) })
	wg.Go(func() { s.grpc.WatchDatabase(bg, s.DB.Ping, time.Second) })

	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.cfg.Logger.Info("shutting down", "deadline", s.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.grpc.Shutdown(sctx)
	return nil
}

// Serve serves gRPC (and the metrics endpoint, if configured) until
// Shutdown or Close. Run calls it; a caller that runs the sealer and the
// keyring watcher itself calls it directly.
func (s *Server) Serve() error {
	if s.metrics != nil {
		go s.metrics.Serve(s.metricsL)
	}
	if s.healthL != nil {
		go s.grpc.ServeHealth(s.healthL)
	}
	return s.grpc.Serve(s.listener)
}

// RunSealer seals committed audit events every Config.SealEvery until ctx
// ends. Every replica runs one; an advisory lock lets one seal at a time.
func (s *Server) RunSealer(ctx context.Context) { s.Sealer.Run(ctx, s.cfg.SealEvery) }

// Shutdown stops serving gRPC gracefully; when ctx ends first it cuts the
// connections.
func (s *Server) Shutdown(ctx context.Context) { s.grpc.Shutdown(ctx) }

// Close releases everything Open opened.
func (s *Server) Close() {
	if s.hup != nil {
		signal.Stop(s.hup)
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.listener != nil {
		s.listener.Close()
	}
	if s.metricsL != nil {
		s.metricsL.Close()
	}
	if s.healthL != nil {
		s.healthL.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.sealPool != nil {
		s.sealPool.Close()
	}
	if s.DB != nil {
		s.DB.Close()
	}
}
