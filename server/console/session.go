package console

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// sessionCookie holds the session id. The __Host- prefix makes the browser
// refuse it unless it is Secure, has Path=/ and no Domain, so no sibling
// host can plant or read it. SameSite=Lax rather than Strict: a link from
// the ticket system to a device page must open signed in, and Lax already
// withholds the cookie from every cross-site POST, frame and subresource;
// state changes are POST only and refused cross-origin besides.
const sessionCookie = "__Host-hotline-session"

// touchEvery bounds how often a session's LastSeen is written.
const touchEvery = time.Minute

// sessionIDBytes is a session id's length: 256 random bits.
const sessionIDBytes = 32

func hashID(id string) ([]byte, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(raw) != sessionIDBytes {
		return nil, false
	}
	h := sha256.Sum256(raw)
	return h[:], true
}

// session returns the request's live session, touching it; a stale or
// unknown cookie is cleared.
func (c *Console) session(w http.ResponseWriter, r *http.Request) (server.ConsoleSession, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return server.ConsoleSession{}, false
	}
	h, ok := hashID(ck.Value)
	if !ok {
		c.clearCookie(w, sessionCookie)
		return server.ConsoleSession{}, false
	}
	s, err := c.store.Session(r.Context(), h)
	if err != nil {
		if server.ErrorCode(err) != server.ENotFound {
			c.log.Error("console: reading a session failed", "err", err)
		}
		c.clearCookie(w, sessionCookie)
		return server.ConsoleSession{}, false
	}
	now := c.cfg.Now()
	if !now.Before(s.ExpiresAt) || now.Sub(s.LastSeen) >= c.cfg.IdleTimeout {
		_ = c.store.DeleteSession(r.Context(), h)
		c.clearCookie(w, sessionCookie)
		return server.ConsoleSession{}, false
	}
	if now.Sub(s.LastSeen) >= touchEvery {
		if err := c.store.TouchSession(r.Context(), h, now); err != nil {
			c.log.Warn("console: updating a session failed", "err", err)
		}
		s.LastSeen = now
	}
	return s, true
}

// startSession signs subject in as role (authenticated at authTime),
// ending the request's previous session, and sets the cookie.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, subject string, role server.Role, authTime time.Time) error {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if h, ok := hashID(ck.Value); ok {
			_ = c.store.DeleteSession(r.Context(), h)
		}
	}
	var raw [sessionIDBytes]byte
	rand.Read(raw[:]) // crypto/rand never fails (Go 1.24+)
	h := sha256.Sum256(raw[:])
	now := c.cfg.Now().UTC()
	s := server.ConsoleSession{IDHash: h[:], Subject: subject, Role: role, CreatedAt: now, AuthTime: authTime.UTC(), LastSeen: now, ExpiresAt: now.Add(c.cfg.AbsoluteTimeout)}
	if err := c.store.CreateSession(r.Context(), s); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: base64.RawURLEncoding.EncodeToString(raw[:]), Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: int(c.cfg.AbsoluteTimeout.Seconds())})
	return nil
}

func (c *Console) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// fresh reports whether the session's sign-in is recent enough to reveal a code.
func (c *Console) fresh(s server.ConsoleSession) bool {
	return c.cfg.Now().Sub(s.AuthTime) < c.cfg.FreshAuth
}

// localPath returns next when it is a path on this console, else "/".
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// signInData is the sign-in page.
type signInData struct {
	Next  string
	OIDC  bool
	Dev   bool
	Roles []server.Role
	Fresh bool
}

func (c *Console) signInPage(w http.ResponseWriter, r *http.Request) {
	d := signInData{Next: localPath(r.URL.Query().Get("next")), OIDC: c.oidc != nil, Dev: c.cfg.Dev, Fresh: r.URL.Query().Get("fresh") == "1",
		Roles: []server.Role{server.RoleAgent, server.RoleSupervisor, server.RoleAuditor, server.RoleProvisioner}}
	c.render(w, r, http.StatusOK, "signin", nil, d)
}

// devSignIn signs in whoever is named with the role picked (Dev only,
// loopback only).
func (c *Console) devSignIn(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	role := server.Role(r.PostFormValue("role"))
	if name == "" || len(name) > 128 || strings.ContainsAny(name, "\r\n\t") || !role.Valid() {
		c.render(w, r, http.StatusBadRequest, "signin", nil, signInData{Dev: true, OIDC: c.oidc != nil, Next: localPath(r.PostFormValue("next")),
			Roles: []server.Role{server.RoleAgent, server.RoleSupervisor, server.RoleAuditor, server.RoleProvisioner}})
		return
	}
	if err := c.startSession(w, r, name, role, c.cfg.Now()); err != nil {
		c.fail(w, r, nil, err)
		return
	}
	http.Redirect(w, r, localPath(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if h, ok := hashID(ck.Value); ok {
			if err := c.store.DeleteSession(r.Context(), h); err != nil {
				c.log.Error("console: ending a session failed", "err", err)
			}
		}
	}
	c.clearCookie(w, sessionCookie)
	c.render(w, r, http.StatusOK, "signedout", nil, nil)
}
