package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dvrhotline/hotline/cmd/internal/wiring"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	"github.com/dvrhotline/hotline/server/console"
	"github.com/dvrhotline/hotline/server/envflag"
	"github.com/dvrhotline/hotline/server/mail"
	"github.com/dvrhotline/hotline/server/postgres"
)

// Main is `hotline-server serve`: a struct that end-to-end tests start on
// port 0 with a temporary keyring, exactly as the binary does.
type Main struct {
	// Config is the server's settings, as wiring.Open takes them; Run
	// sets CreateKeyring and DevStaff from Dev, trusts the keyring's
	// staff issuer under Dev too, and the GC percent from GOGC.
	wiring.Config
	// Dev creates a keyring when there is none, trusts its development
	// staff issuer, seeds demo devices and prints how to get a token.
	Dev bool
	// Console configures the support console; an empty Console.Listen
	// serves none.
	Console console.Config
	// Mail is the SMTP configuration; without an address no mail is sent
	// (messages stay queued).
	Mail mail.Config

	stdout, stderr io.Writer
	srv            *wiring.Server
	console        *console.Console
	ready          chan struct{}
}

// NewMain returns a Main with defaults from the environment.
func NewMain(stdout, stderr io.Writer) *Main {
	return &Main{
		Config: wiring.Config{
			Listen:          envflag.String("HOTLINE_LISTEN", "127.0.0.1:7443"),
			Limits:          server.DefaultLimits,
			ShutdownTimeout: 10 * time.Second,
			SealEvery:       wiring.DefaultSealEvery,
			KeyringPoll:     envflag.Duration("HOTLINE_KEYRING_POLL", wiring.DefaultKeyringPoll),
		},
		stdout: stdout,
		stderr: stderr,
		ready:  make(chan struct{}),
	}
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
	fs.StringVar(&m.StaffJWKS, "staff-jwks", os.Getenv("HOTLINE_STAFF_JWKS"), "JWK set file of trusted staff-token issuers (env HOTLINE_STAFF_JWKS; required outside --dev)")
	fs.BoolVar(&m.TrustKeyringStaff, "trust-keyring-staff-issuer", os.Getenv("HOTLINE_TRUST_KEYRING_STAFF") == "1", "without --staff-jwks, trust the keyring's development staff issuer outside --dev (env HOTLINE_TRUST_KEYRING_STAFF=1)")
	fs.IntVar(&m.Limits.PerDevice, "limit-per-device", envflag.Int("HOTLINE_LIMIT_PER_DEVICE", m.Limits.PerDevice), "issuances per device per 24h before a supervisor is needed")
	fs.IntVar(&m.Limits.PerAgent, "limit-per-agent", envflag.Int("HOTLINE_LIMIT_PER_AGENT", m.Limits.PerAgent), "issuances per staff member per hour before a supervisor is needed")
	fs.DurationVar(&m.ShutdownTimeout, "shutdown-timeout", m.ShutdownTimeout, "graceful shutdown deadline")
	fs.DurationVar(&m.SealEvery, "seal-every", m.SealEvery, "how often committed audit events are sealed into the signed chain")
	fs.DurationVar(&m.KeyringPoll, "keyring-poll", m.KeyringPoll, "how often the keyring file is checked for a rotation to load; 0: only on SIGHUP (env HOTLINE_KEYRING_POLL)")
	m.Console.RegisterFlags(fs)
	m.Mail.RegisterFlags(fs)
	fs.StringVar(&m.AuditWitness, "audit-witness", os.Getenv("HOTLINE_AUDIT_WITNESS"), "folder outside the database where every signed audit checkpoint is appended (env HOTLINE_AUDIT_WITNESS)")
	fs.StringVar(&m.AuditDatabaseURL, "audit-database-url", os.Getenv("HOTLINE_AUDIT_DATABASE_URL"), "the audit sealer's own PostgreSQL login, a member of "+audit.SealerRole+" (env HOTLINE_AUDIT_DATABASE_URL; default --database-url)")
	if err := parse(fs, args, m.stderr); err != nil {
		return err
	}
	m.KeyringDir, m.DatabaseURL = c.keyring, c.databaseURL
	return nil
}

// Addr returns the gRPC listening address once Ready is closed.
func (m *Main) Addr() string { return m.srv.Addr() }

// Ready is closed once the server accepts connections.
func (m *Main) Ready() <-chan struct{} { return m.ready }

// Run migrates, opens everything and serves until ctx ends, then stops
// gracefully within ShutdownTimeout. The keyring is reloaded on SIGHUP and
// when its file changes (checked every KeyringPoll).
func (m *Main) Run(ctx context.Context) error {
	if m.Logger == nil {
		m.Logger = wiring.NewLogger(m.stderr)
	}
	var err error
	cfg := m.Config
	cfg.CreateKeyring, cfg.DevStaff = m.Dev, m.Dev
	cfg.TrustKeyringStaff = m.Dev || m.TrustKeyringStaff
	cfg.GCPercent = wiring.GCPercent(os.Getenv("GOGC"))
	m.srv, err = wiring.Open(ctx, cfg)
	if err != nil {
		return err
	}
	stopOutbox, err := startOutbox(m.srv.Service, m.Mail, m.Logger)
	if err != nil {
		return err
	}
	defer stopOutbox()
	if m.Dev {
		fmt.Fprintf(m.stdout, `hotline-server is listening on %s (plaintext, loopback only).
Get a staff token and try it:
  export HOTLINE_ADDR=%s HOTLINE_KEYRING=%s
  export HOTLINE_TOKEN=$(go run ./cmd/hotline-server token --subject alice --role agent)
  go run ./cmd/hotlinectl lookup 'JZ6OES#2017-08-01#3#DVR1101134C08011'
Roles: agent, supervisor, auditor, provisioner. grpcurl works too, with the token:
  grpcurl -H "authorization: Bearer $HOTLINE_TOKEN" -plaintext %[1]s list
`, m.Addr(), m.Addr(), m.KeyringDir)
	}
	if m.Dev {
		seedDemoDevices(ctx, m.srv.Service, m.Logger)
	}
	if m.Console.Listen != "" {
		m.Console.Dev = m.Dev
		if m.console, err = console.Start(ctx, m.Console, m.srv.Service, m.srv.DB, m.Logger); err != nil {
			return err
		}
		m.Logger.Info("console serving", "url", m.console.URL())
		if m.Dev {
			fmt.Fprintf(m.stdout, "The support console is at %s (development sign-in: pick a name and a role).\n", m.console.URL())
		}
	}
	close(m.ready)
	err = m.srv.Run(ctx)
	if m.console != nil {
		sctx, cancel := context.WithTimeout(context.Background(), m.ShutdownTimeout)
		m.console.Shutdown(sctx)
		cancel()
	}
	return err
}

// Close releases what Run opened.
func (m *Main) Close() error {
	if m.srv != nil {
		m.srv.Close()
	}
	if m.console != nil {
		m.console.Close()
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
