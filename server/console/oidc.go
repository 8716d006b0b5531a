package console

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dvrhotline/hotline/server"
)

// loginCookie carries one sign-in attempt (state, nonce, PKCE verifier,
// where to go next) from /auth/login to /auth/callback. It must come back
// on the identity provider's cross-site redirect, hence SameSite=Lax; it
// lives ten minutes and is cleared by the callback.
const loginCookie = "__Host-hotline-login"

const loginTTL = 10 * time.Minute

type oidcClient struct {
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	oauth    oauth2.Config
}

func newOIDC(ctx context.Context, cfg Config) (*oidcClient, error) {
	p, err := oidc.NewProvider(ctx, cfg.OIDCIssuer)
	if err != nil {
		return nil, fmt.Errorf("console: OpenID provider %s: %w", cfg.OIDCIssuer, err)
	}
	return &oidcClient{
		provider: p,
		verifier: p.Verifier(&oidc.Config{ClientID: cfg.OIDCClientID}),
		oauth: oauth2.Config{ClientID: cfg.OIDCClientID, ClientSecret: cfg.OIDCClientSecret, Endpoint: p.Endpoint(),
			RedirectURL: strings.TrimRight(cfg.PublicURL, "/") + "/auth/callback", Scopes: cfg.OIDCScopes},
	}, nil
}

// loginAttempt is the content of loginCookie.
type loginAttempt struct {
	State    string    `json:"s"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Next     string    `json:"x"`
	Fresh    bool      `json:"f"`
	Started  time.Time `json:"t"`
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// login sends the browser to the identity provider (code flow, PKCE S256).
// With fresh=1 it asks for a new authentication (max_age=0).
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.oidc == nil {
		http.Redirect(w, r, "/sign-in", http.StatusSeeOther)
		return
	}
	la := loginAttempt{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		Next: localPath(r.URL.Query().Get("next")), Fresh: r.URL.Query().Get("fresh") == "1", Started: c.cfg.Now().UTC()}
	b, _ := json.Marshal(la)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: int(loginTTL.Seconds())})
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(la.Verifier), oidc.Nonce(la.Nonce)}
	if la.Fresh {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", "0"), oauth2.SetAuthURLParam("prompt", "login"))
	}
	http.Redirect(w, r, c.oidc.oauth.AuthCodeURL(la.State, opts...), http.StatusFound)
}

// callback finishes the code flow: state, PKCE, ID token signature,
// audience, nonce, then the role from the role claim.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, msg string) {
		c.log.Warn("console: sign-in refused", "why", msg, "remote", r.RemoteAddr)
		c.render(w, r, status, "error", nil, problem{Status: status, Message: msg, Next: "Sign in again from the console's sign-in page; if it keeps failing, ask IT to check your groups."})
	}
	if c.oidc == nil {
		refuse(http.StatusNotFound, "OpenID sign-in is not configured.")
		return
	}
	ck, err := r.Cookie(loginCookie)
	c.clearCookie(w, loginCookie)
	var la loginAttempt
	if err != nil {
		refuse(http.StatusBadRequest, "The sign-in took too long or was started in another browser.")
		return
	}
	if b, err := base64.RawURLEncoding.DecodeString(ck.Value); err != nil || json.Unmarshal(b, &la) != nil {
		refuse(http.StatusBadRequest, "The sign-in could not be read.")
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		refuse(http.StatusUnauthorized, "The identity provider refused the sign-in ("+clipText(e, 64)+").")
		return
	}
	if la.State == "" || q.Get("state") != la.State || c.cfg.Now().Sub(la.Started) > loginTTL {
		refuse(http.StatusBadRequest, "The sign-in answer does not belong to this browser's sign-in.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	tok, err := c.oidc.oauth.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(la.Verifier))
	if err != nil {
		c.log.Warn("console: code exchange failed", "err", err)
		refuse(http.StatusUnauthorized, "The identity provider did not confirm the sign-in.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := c.oidc.verifier.Verify(ctx, raw)
	if err != nil {
		c.log.Warn("console: ID token refused", "err", err)
		refuse(http.StatusUnauthorized, "The identity provider's answer did not verify.")
		return
	}
	if idt.Nonce != la.Nonce {
		refuse(http.StatusUnauthorized, "The identity provider's answer was not for this sign-in.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		refuse(http.StatusUnauthorized, "The identity provider's answer could not be read.")
		return
	}
	subject, role, msg := c.identity(claims)
	if msg != "" {
		refuse(http.StatusForbidden, msg)
		return
	}
	// auth_time is when the provider last authenticated the person; a
	// provider that omits it authenticated for this very token.
	authTime := idt.IssuedAt
	if at, ok := claims["auth_time"].(float64); ok {
		authTime = time.Unix(int64(at), 0)
	}
	if la.Fresh && authTime.Before(la.Started.Add(-time.Minute)) {
		refuse(http.StatusUnauthorized, "The identity provider did not ask for your password again.")
		return
	}
	if err := c.startSession(w, r, subject, role, authTime); err != nil {
		c.fail(w, r, nil, err)
		return
	}
	http.Redirect(w, r, la.Next, http.StatusSeeOther)
}

// identity reads the subject and the one role of an ID token's claims; msg
// says why when there is none.
func (c *Console) identity(claims map[string]any) (subject string, role server.Role, msg string) {
	subject, _ = claims[c.cfg.SubjectClaim].(string)
	if subject == "" {
		subject, _ = claims["sub"].(string)
	}
	subject = strings.TrimSpace(subject)
	if subject == "" || len(subject) > 128 {
		return "", "", "Your account has no usable name (claim " + c.cfg.SubjectClaim + ")."
	}
	var values []string
	switch v := claims[c.cfg.RoleClaim].(type) {
	case string:
		values = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				values = append(values, s)
			}
		}
	}
	roles := map[server.Role]bool{}
	for _, v := range values {
		if r, ok := c.cfg.Roles[v]; ok {
			roles[r] = true
		}
	}
	switch len(roles) {
	case 0:
		return "", "", "Your account is in none of the console's groups."
	case 1:
		for r := range roles {
			return subject, r, ""
		}
	}
	return "", "", "Your account is in the groups of several console roles; a session has one role: ask IT to keep one."
}

func clipText(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
