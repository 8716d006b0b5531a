package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
)

// Main is `hotline-server serve`: a struct that end-to-end tests start on
// port 0 with a temporary keyring, exactly as the binary does.
type Main struct {
	// Keyring is the keyring folder; with Dev it is created when missing.
	Keyring string
	// DatabaseURL is the PostgreSQL URL.
	DatabaseURL string
	// Listen is the gRPC address; ":0" style picks a free port.
	Listen string
	// MetricsListen serves Prometheus metrics on /metrics; empty disables.
	MetricsListen string
	// HealthListen serves gRPC health alone, in plaintext, for probes;
	// empty disables.
	HealthListen string
	// TLSCert and TLSKey enable TLS; required off loopback unless
	// InsecurePlaintext.
	TLSCert, TLSKey string
	// InsecurePlaintext allows plaintext on a non-loopback address.
	InsecurePlaintext bool
	// Dev creates a keyring when there is none and prints how to get a token.
	Dev bool
	// StaffJWKS is a JWK set file of staff-token issuer keys to trust; empty
	// trusts the keyring's own development issuer.
	StaffJWKS string
	// Limits are the issuance limits.
	Limits server.Limits
	// ShutdownTimeout bounds the graceful stop before connections are cut.
	ShutdownTimeout time.Duration
	// SealEvery is how often the audit sealer runs.
	SealEvery time.Duration
	// Logger is the structured log (JSON on stderr by default).
	Logger *slog.Logger

	stdout, stderr io.Writer
	db             *postgres.DB
	grpc           *grpcserver.Server
	metrics        *http.Server
	listener       net.Listener
	ready          chan struct{}
}

// NewMain returns a Main with defaults from the environment.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{
		Listen:          envOr("HOTLINE_LISTEN", "127.0.0.1:7443"),
		Limits:          server.DefaultLimits,
		ShutdownTimeout: 10 * time.Second,
		SealEvery:       time.Second,
		stdout:          stdout,
		stderr:          stderr,
		ready:           make(chan struct{}),
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

// ParseFlags reads serve's flags (environment variables give the defaults).
func (m *Main) ParseFlags(args []string) error {
	var c common
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.register(fs)
	fs.StringVar(&m.Listen, "listen", m.Listen, "gRPC listen address (env HOTLINE_LISTEN)")
	fs.StringVar(&m.MetricsListen, "metrics-listen", os.Getenv("HOTLINE_METRICS_LISTEN"), "Prometheus /metrics address, e.g. 127.0.0.1:9464 (env HOTLINE_METRICS_LISTEN)")
	fs.StringVar(&m.HealthListen, "health-listen", os.Getenv("HOTLINE_HEALTH_LISTEN"), "plaintext gRPC health-only address for probes, e.g. :8081 (env HOTLINE_HEALTH_LISTEN)")
	fs.StringVar(&m.TLSCert, "tls-cert", os.Getenv("HOTLINE_TLS_CERT"), "TLS certificate (PEM) (env HOTLINE_TLS_CERT)")
	fs.StringVar(&m.TLSKey, "tls-key", os.Getenv("HOTLINE_TLS_KEY"), "TLS private key (PEM) (env HOTLINE_TLS_KEY)")
	fs.BoolVar(&m.InsecurePlaintext, "insecure-plaintext", os.Getenv("HOTLINE_INSECURE_PLAINTEXT") == "1", "allow plaintext gRPC on a non-loopback address")
	fs.BoolVar(&m.Dev, "dev", os.Getenv("HOTLINE_DEV") == "1", "development: create a keyring if none and print how to get a token")
	fs.StringVar(&m.StaffJWKS, "staff-jwks", os.Getenv("HOTLINE_STAFF_JWKS"), "JWK set file of trusted staff-token issuers (default: the keyring's dev issuer)")
	fs.IntVar(&m.Limits.PerDevice, "limit-per-device", envInt("HOTLINE_LIMIT_PER_DEVICE", m.Limits.PerDevice), "issuances per device per 24h before a supervisor is needed")
	fs.IntVar(&m.Limits.PerAgent, "limit-per-agent", envInt("HOTLINE_LIMIT_PER_AGENT", m.Limits.PerAgent), "issuances per staff member per hour before a supervisor is needed")
	fs.DurationVar(&m.ShutdownTimeout, "shutdown-timeout", m.ShutdownTimeout, "graceful shutdown deadline")
	fs.DurationVar(&m.SealEvery, "seal-every", m.SealEvery, "how often committed audit events are sealed into the signed chain")
	if err := parse(fs, args, m.stderr); err != nil {
		return err
	}
	m.Keyring, m.DatabaseURL = c.keyring, c.databaseURL
	return nil
}

// Addr returns the gRPC listening address once Ready is closed.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// Ready is closed once the server accepts connections.
func (m *Main) Ready() <-chan struct{} { return m.ready }

// secretAttrs are log attribute names whose values are never written: no
// code path logs them today, and this keeps a future one from doing so.
var secretAttrs = map[string]bool{
	"token": true, "authorization": true, "grant": true, "voice_code": true, "code": true,
	"password": true, "key": true, "seed": true, "secret": true, "database_url": true,
}

// redact is the log handler's ReplaceAttr: secret attributes become
// "REDACTED", and a URL's password is masked wherever it appears.
func redact(_ []string, a slog.Attr) slog.Attr {
	if secretAttrs[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "REDACTED")
	}
	if a.Value.Kind() == slog.KindString {
		if v := a.Value.String(); strings.Contains(v, "://") && strings.Contains(v, "@") {
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, has := u.User.Password(); has {
					u.User = url.UserPassword(u.User.Username(), "REDACTED")
					return slog.String(a.Key, u.String())
				}
			}
		}
	}
	return a
}

// Run migrates, opens everything and serves until ctx ends, then stops
// gracefully within ShutdownTimeout.
func (m *Main) Run(ctx context.Context) error {
	if m.Logger == nil {
		m.Logger = slog.New(slog.NewJSONHandler(m.stderr, &slog.HandlerOptions{ReplaceAttr: redact}))
	}
	if m.DatabaseURL == "" {
		return errors.New("no database: pass --database-url or set DATABASE_URL")
	}
	if m.Keyring == "" {
		return errors.New("no keyring: pass --keyring DIR or set HOTLINE_KEYRING (`hotline-server keys init` creates one; --dev creates it for you)")
	}
	tlsOn := m.TLSCert != "" || m.TLSKey != ""
	if !tlsOn && !grpcserver.IsLoopback(m.Listen) && !m.InsecurePlaintext {
		return fmt.Errorf("refusing plaintext gRPC on %s, which is not a loopback address: pass --tls-cert and --tls-key (or --insecure-plaintext behind a TLS-terminating proxy)", m.Listen)
	}

	var kr *keyring.Keyring
	var err error
	if m.Dev {
		var created bool
		kr, created, err = keyring.OpenOrInit(m.Keyring)
		if created {
			m.Logger.Info("created a development keyring", "dir", m.Keyring)
		}
	} else {
		kr, err = keyring.Open(m.Keyring)
	}
	if err != nil {
		return err
	}

	if err := postgres.Migrate(ctx, m.DatabaseURL); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Serve as the service role: it may insert and read audit events but
	// never change or delete them. Refuse to start if it could.
	pcfg, err := pgxpool.ParseConfig(m.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	pcfg.AfterConnect = audit.SetServiceRole
	m.db, err = postgres.OpenConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	if err := audit.CheckServiceRole(ctx, m.db.Pool()); err != nil {
		return err
	}
	var login string
	var super bool
	if err := m.db.Pool().QueryRow(ctx, `SELECT session_user::text, rolsuper FROM pg_roles WHERE rolname = session_user`).Scan(&login, &super); err == nil && super {
		m.Logger.Warn("the database login is a superuser: the server works as "+audit.ServiceRole+
			", but a superuser login could leave that role; in production connect as a login role that is only a member of "+audit.ServiceRole,
			"login", login)
	}

	var verifier *server.StaffVerifier
	if m.StaffJWKS != "" {
		b, err := os.ReadFile(m.StaffJWKS)
		if err != nil {
			return fmt.Errorf("staff JWK set: %w", err)
		}
		verifier, err = server.NewStaffVerifierJWKS(b)
		if err != nil {
			return err
		}
	} else {
		verifier, err = server.NewStaffVerifier(kr.PublicKeys(keyring.PurposeStaff, time.Now(), server.StaffTokenMaxTTL))
		if err != nil {
			return err
		}
	}

	svc := server.NewService(m.db, kr)
	// Verify and checkpoints trust every audit key ever used: the log they
	// signed does not expire with a rotation.
	svc.AuditLog = &audit.Log{DB: m.db.Pool(), Trusted: func() map[string]ed25519.PublicKey {
		return kr.PublicKeys(keyring.PurposeAudit, time.Now(), audit.TrustForever)
	}}
	svc.Limits = m.Limits
	svc.Logger = m.Logger

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var opts []grpc.ServerOption
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(m.TLSCert, m.TLSKey)
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	}
	m.grpc, err = grpcserver.New(grpcserver.Config{Service: svc, Verifier: verifier, Logger: m.Logger, Registerer: reg, ServerOptions: opts})
	if err != nil {
		return err
	}

	m.listener, err = net.Listen("tcp", m.Listen)
	if err != nil {
		return err
	}
	if m.HealthListen != "" {
		hl, err := net.Listen("tcp", m.HealthListen)
		if err != nil {
			return fmt.Errorf("health: %w", err)
		}
		go m.grpc.ServeHealth(hl)
	}
	if m.MetricsListen != "" {
		ml, err := net.Listen("tcp", m.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		m.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go m.metrics.Serve(ml)
	}
	m.Logger.Info("serving", "addr", m.Addr(), "tls", tlsOn, "key_generation", kr.CurrentGeneration(), "limits_per_device", m.Limits.PerDevice, "limits_per_agent", m.Limits.PerAgent)
	if m.Dev {
		fmt.Fprintf(m.stdout, `hotline-server is listening on %s (plaintext, loopback only).
Get a staff token and try it:
  export HOTLINE_ADDR=%s HOTLINE_KEYRING=%s
  export HOTLINE_TOKEN=$(go run ./cmd/hotline-server token --subject alice --role agent)
  go run ./cmd/hotlinectl lookup 'JZ6OES#2017-08-01#3#DVR1101134C08011'
Roles: agent, supervisor, auditor, provisioner. grpcurl works too (reflection is on).
`, m.Addr(), m.Addr(), m.Keyring)
	}
	close(m.ready)

	// The sealer links committed audit events into the signed chain. Every
	// replica runs one; an advisory lock lets one seal at a time.
	sealCtx, stopSealer := context.WithCancel(context.Background())
	defer stopSealer()
	auditKID, auditKey := kr.AuditSigner()
	sealer := audit.NewSealer(m.db.Pool(), auditKID, auditKey)
	sealer.Logger = m.Logger
	go m.grpc.WatchDatabase(sealCtx, m.db.Ping, time.Second)
	sealerDone := make(chan struct{})
	go func() {
		defer close(sealerDone)
		sealer.Run(sealCtx, m.SealEvery)
	}()

	errc := make(chan error, 1)
	go func() { errc <- m.grpc.Serve(m.listener) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	m.Logger.Info("shutting down", "deadline", m.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), m.ShutdownTimeout)
	defer cancel()
	m.grpc.Shutdown(sctx)
	stopSealer()
	<-sealerDone
	return nil
}

// Close releases what Run opened.
func (m *Main) Close() error {
	if m.grpc != nil {
		m.grpc.Stop()
	}
	if m.metrics != nil {
		m.metrics.Close()
	}
	if m.db != nil {
		m.db.Close()
	}
	return nil
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	c.register(fs)
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := c.needDatabase(); err != nil {
		return err
	}
	if err := postgres.Migrate(ctx, c.databaseURL); err != nil {
		return err
	}
	cur, latest, err := postgres.MigrationStatus(ctx, c.databaseURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database migrated: version %d of %d\n", cur, latest)
	return nil
}
