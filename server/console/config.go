package console

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/envflag"
)

// Config configures the console.
type Config struct {
	// Listen is the console's address; empty disables the console.
	Listen string
	// PublicURL is the console's address as browsers reach it (the OIDC
	// redirect URL is PublicURL + "/auth/callback"); empty means
	// https://Listen, or http:// on a loopback address without TLS.
	PublicURL string
	// TLSCert and TLSKey enable HTTPS; required off loopback unless
	// InsecurePlaintext (a TLS-terminating proxy in front).
	TLSCert, TLSKey   string
	InsecurePlaintext bool
	// Dev adds the development sign-in page (name and role picked by
	// hand); refused unless Listen is a loopback address.
	Dev bool

	// OIDCIssuer, OIDCClientID and OIDCClientSecret name the identity
	// provider and the console's client there. Empty OIDCIssuer: no
	// OpenID sign-in (only Dev's).
	OIDCIssuer, OIDCClientID, OIDCClientSecret string
	// OIDCScopes are the scopes asked for (default openid, profile, email
	// and groups).
	OIDCScopes []string
	// RoleClaim is the ID token claim holding the staff member's groups
	// (a string or a list of strings), default "groups".
	RoleClaim string
	// Roles maps values of RoleClaim to roles; a person whose values map
	// to no role, or to more than one, is not signed in.
	Roles map[string]server.Role
	// SubjectClaim is the claim naming the person in the audit log
	// (default "sub"; "preferred_username" or "email" read better).
	SubjectClaim string

	// IdleTimeout ends a session unused for that long (default 30 minutes);
	// AbsoluteTimeout ends every session that long after sign-in (default
	// 10 hours); FreshAuth is the oldest sign-in that may reveal a code
	// (default 1 hour; older needs a fresh sign-in at the provider).
	IdleTimeout, AbsoluteTimeout, FreshAuth time.Duration

	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// RegisterFlags adds the console's flags to fs, with defaults from the
// environment (HOTLINE_CONSOLE_*).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	env := os.Getenv
	fs.StringVar(&c.Listen, "console-listen", env("HOTLINE_CONSOLE_LISTEN"), "support console address, e.g. 127.0.0.1:7444; empty: no console (env HOTLINE_CONSOLE_LISTEN)")
	fs.StringVar(&c.PublicURL, "console-url", env("HOTLINE_CONSOLE_URL"), "the console's URL as browsers reach it (env HOTLINE_CONSOLE_URL)")
	fs.StringVar(&c.TLSCert, "console-tls-cert", env("HOTLINE_CONSOLE_TLS_CERT"), "console TLS certificate (PEM) (env HOTLINE_CONSOLE_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "console-tls-key", env("HOTLINE_CONSOLE_TLS_KEY"), "console TLS private key (PEM) (env HOTLINE_CONSOLE_TLS_KEY)")
	fs.BoolVar(&c.InsecurePlaintext, "console-insecure-plaintext", env("HOTLINE_CONSOLE_INSECURE_PLAINTEXT") == "1", "allow plain HTTP off loopback (behind a TLS-terminating proxy)")
	fs.StringVar(&c.OIDCIssuer, "console-oidc-issuer", env("HOTLINE_CONSOLE_OIDC_ISSUER"), "OpenID provider issuer URL (env HOTLINE_CONSOLE_OIDC_ISSUER)")
	fs.StringVar(&c.OIDCClientID, "console-oidc-client-id", env("HOTLINE_CONSOLE_OIDC_CLIENT_ID"), "OpenID client id (env HOTLINE_CONSOLE_OIDC_CLIENT_ID)")
	c.OIDCClientSecret = env("HOTLINE_CONSOLE_OIDC_CLIENT_SECRET") // a secret: environment only, never a flag
	fs.Func("console-oidc-scopes", "space-separated scopes (default \"openid profile email groups\") (env HOTLINE_CONSOLE_OIDC_SCOPES)", func(s string) error {
		c.OIDCScopes = strings.Fields(s)
		return nil
	})
	if s := env("HOTLINE_CONSOLE_OIDC_SCOPES"); s != "" {
		c.OIDCScopes = strings.Fields(s)
	}
	fs.StringVar(&c.RoleClaim, "console-role-claim", envflag.String("HOTLINE_CONSOLE_ROLE_CLAIM", "groups"), "ID token claim with the staff member's groups (env HOTLINE_CONSOLE_ROLE_CLAIM)")
	fs.StringVar(&c.SubjectClaim, "console-subject-claim", envflag.String("HOTLINE_CONSOLE_SUBJECT_CLAIM", "sub"), "ID token claim naming the staff member (env HOTLINE_CONSOLE_SUBJECT_CLAIM)")
	roles := env("HOTLINE_CONSOLE_ROLES")
	if m, err := ParseRoles(roles); err == nil {
		c.Roles = m
	}
	fs.Func("console-roles", "claim values to roles, e.g. \"hotline-agents=agent,hotline-supervisors=supervisor\" (env HOTLINE_CONSOLE_ROLES)", func(s string) error {
		m, err := ParseRoles(s)
		c.Roles = m
		return err
	})
	fs.DurationVar(&c.IdleTimeout, "console-idle-timeout", envflag.Duration("HOTLINE_CONSOLE_IDLE_TIMEOUT", 30*time.Minute), "end a console session unused this long")
	fs.DurationVar(&c.AbsoluteTimeout, "console-session-max", envflag.Duration("HOTLINE_CONSOLE_SESSION_MAX", 10*time.Hour), "end every console session this long after sign-in")
	fs.DurationVar(&c.FreshAuth, "console-fresh-auth", envflag.Duration("HOTLINE_CONSOLE_FRESH_AUTH", time.Hour), "a code is revealed only within this long of signing in at the identity provider")
}

// ParseRoles reads a claim-value-to-role mapping, "value=role,value=role".
func ParseRoles(s string) (map[string]server.Role, error) {
	m := map[string]server.Role{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		r := server.Role(strings.TrimSpace(v))
		if !ok || strings.TrimSpace(k) == "" || !r.Valid() {
			return nil, fmt.Errorf("console roles: %q: expected value=role with role agent, supervisor, auditor or provisioner", kv)
		}
		m[strings.TrimSpace(k)] = r
	}
	return m, nil
}

// withDefaults fills the zero fields and checks the combination.
func (c Config) withDefaults() (Config, error) {
	if c.Listen == "" {
		return c, errors.New("console: no listen address")
	}
	loop := netaddr.IsLoopback(c.Listen)
	tlsOn := c.TLSCert != "" || c.TLSKey != ""
	if c.Dev && !loop {
		return c, fmt.Errorf("console: the development sign-in is refused on %s, which is not a loopback address", c.Listen)
	}
	if !tlsOn && !loop && !c.InsecurePlaintext {
		return c, fmt.Errorf("console: refusing plain HTTP on %s, which is not a loopback address: pass --console-tls-cert and --console-tls-key (or --console-insecure-plaintext behind a TLS-terminating proxy)", c.Listen)
	}
	if c.OIDCIssuer == "" && !c.Dev {
		return c, errors.New("console: no way to sign in: pass --console-oidc-issuer (or --dev on loopback)")
	}
	if c.OIDCIssuer != "" && (c.OIDCClientID == "" || len(c.Roles) == 0) {
		return c, errors.New("console: OpenID sign-in needs --console-oidc-client-id and --console-roles")
	}
	if len(c.OIDCScopes) == 0 {
		c.OIDCScopes = []string{"openid", "profile", "email", "groups"}
	}
	if c.RoleClaim == "" {
		c.RoleClaim = "groups"
	}
	if c.SubjectClaim == "" {
		c.SubjectClaim = "sub"
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Minute
	}
	if c.AbsoluteTimeout <= 0 {
		c.AbsoluteTimeout = 10 * time.Hour
	}
	if c.FreshAuth <= 0 {
		c.FreshAuth = time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}
