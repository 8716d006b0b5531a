package console

import (
	"bytes"
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the support console's HTTP handler and its listener.
type Console struct {
	cfg   Config
	svc   *server.Service
	store server.ConsoleStore
	log   *slog.Logger
	oidc  *oidcClient
	pages map[string]*template.Template

	srv      *http.Server
	listener net.Listener
	url      string
}

// New returns a console serving svc, with sessions in store. With an
// OIDCIssuer it reads the provider's discovery document now.
func New(ctx context.Context, cfg Config, svc *server.Service, store server.ConsoleStore, log *slog.Logger) (*Console, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Console{cfg: cfg, svc: svc, store: store, log: log}
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	if cfg.OIDCIssuer != "" {
		if c.oidc, err = newOIDC(ctx, cfg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Start listens on cfg.Listen and serves the console until Close.
func Start(ctx context.Context, cfg Config, svc *server.Service, store server.ConsoleStore, log *slog.Logger) (*Console, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	tlsOn := cfg.TLSCert != "" || cfg.TLSKey != ""
	if cfg.PublicURL == "" {
		scheme := "http"
		if tlsOn {
			scheme = "https"
		}
		cfg.PublicURL = scheme + "://" + ln.Addr().String()
	}
	c, err := New(ctx, cfg, svc, store, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	c.listener, c.url = ln, strings.TrimRight(c.cfg.PublicURL, "/")
	c.srv = &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelWarn)}
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("console TLS: %w", err)
		}
		c.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		go c.srv.ServeTLS(ln, "", "")
	} else {
		go c.srv.Serve(ln)
	}
	return c, nil
}

// URL is the console's public address (after Start).
func (c *Console) URL() string { return c.url }

// Shutdown stops the console gracefully within ctx.
func (c *Console) Shutdown(ctx context.Context) error {
	if c.srv == nil {
		return nil
	}
	return c.srv.Shutdown(ctx)
}

// Close stops the console at once.
func (c *Console) Close() error {
	if c.srv == nil {
		return nil
	}
	return c.srv.Close()
}

// Handler returns the console's routes behind its security middleware.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(http.FileServerFS(static))))

	mux.HandleFunc("GET /{$}", c.home)
	mux.HandleFunc("GET /sign-in", c.signInPage)
	mux.HandleFunc("GET /auth/login", c.login)
	mux.HandleFunc("GET /auth/callback", c.callback)
	mux.HandleFunc("POST /sign-out", c.signOut)
	if c.cfg.Dev {
		mux.HandleFunc("POST /dev/sign-in", c.devSignIn)
	}

	// Each staff route names the act it serves: the role policy is
	// checked (and a refusal audited) before the handler runs.
	staff := func(pattern string, act server.Action, h handlerFunc) {
		mux.Handle(pattern, c.staff(act, h))
	}
	staff("GET /search", server.ActionLookup, c.search)
	staff("GET /devices/{id}", server.ActionLookup, c.device)
	staff("POST /devices/{id}/owner-check", server.ActionOwnerCheck, c.ownerCheck)
	staff("POST /devices/{id}/owner-code/send", server.ActionOwnerCodeSend, c.sendOwnerCode)
	staff("POST /devices/{id}/owner-code/verify", server.ActionOwnerCodeCheck, c.verifyOwnerCode)
	staff("POST /devices/{id}/issue", server.ActionIssue, c.issue)
	staff("POST /devices/{id}/show-again", server.ActionIssue, c.showAgain)
	staff("POST /devices/{id}/hold", server.ActionHold, c.hold)
	staff("POST /devices/{id}/release", server.ActionRelease, c.release)
	staff("POST /devices/{id}/ask-approval", server.ActionApprovalRequest, c.askApproval)
	staff("GET /approvals", server.ActionApprovalGrant, c.queue)
	staff("GET /approvals/list", server.ActionApprovalGrant, c.queueList)
	staff("GET /approvals/{aid}", server.ActionApprovalRequest, c.approval)
	staff("GET /approvals/{aid}/status", server.ActionApprovalRequest, c.approvalStatus)
	staff("POST /approvals/{aid}/reveal", server.ActionApprovalReveal, c.approvalReveal)
	staff("POST /approvals/{aid}/grant", server.ActionApprovalGrant, c.grant)
	staff("POST /approvals/{aid}/deny", server.ActionApprovalDeny, c.deny)
	staff("GET /team/today", server.ActionAuditQuery, c.teamToday)
	staff("GET /audit", server.ActionAuditQuery, c.audit)
	staff("GET /audit/export", server.ActionAuditExport, c.export)
	staff("GET /audit/summary", server.ActionAuditSummary, c.summary)
	staff("GET /audit/verify", server.ActionAuditVerify, c.verify)
	staff("GET /audit/checkpoint", server.ActionAuditCheckpoint, c.checkpoint)

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("console: cross-origin request refused", "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		c.render(w, r, http.StatusForbidden, "error", nil, problem{Status: http.StatusForbidden,
			Message: "This request came from another web site and was refused.", Next: "Use the console's own pages."})
	}))
	return securityHeaders(c.tlsOn(), cop.Handler(mux))
}

func (c *Console) tlsOn() bool { return strings.HasPrefix(c.cfg.PublicURL, "https://") }

// csp allows the console's own files only: no inline script or style, no
// frames, forms posting only to the console.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders sets the headers every answer carries.
func securityHeaders(tlsOn bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		if tlsOn {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			// Pages show masked owner data and codes: never stored.
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// staticHandler lets browsers cache the console's own files for a day.
func staticHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		next.ServeHTTP(w, r)
	})
}

// handlerFunc is a staff route's handler, given the signed-in actor.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *request)

// request is a staff request: the session and the actor it acts as.
type request struct {
	Session server.ConsoleSession
	Actor   server.Actor
}

// staff requires a session whose role may perform act; otherwise the
// refusal is audited by the service and answered 403.
func (c *Console) staff(act server.Action, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := c.session(w, r)
		if !ok {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/sign-in?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.render(w, r, http.StatusUnauthorized, "error", nil, asProblem(&server.Error{Code: server.EUnauthenticated, Message: "You are not signed in, or your session has ended."}))
			return
		}
		rq := &request{Session: sess, Actor: server.Actor{Subject: sess.Subject, Role: sess.Role, ClientAddr: "console:" + r.RemoteAddr}}
		if err := c.svc.Authorize(r.Context(), rq.Actor, act); err != nil {
			c.fail(w, r, rq, err)
			return
		}
		d := RequestTimeout
		if act == server.ActionAuditExport {
			d = ExportTimeout
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h(w, r.WithContext(ctx), rq)
	})
}

// RequestTimeout bounds each console request's work (its service calls
// and their database calls), as the gRPC API bounds a unary call;
// ExportTimeout bounds a streamed audit export, as the API bounds a
// stream.
const (
	RequestTimeout = 30 * time.Second
	ExportTimeout  = time.Hour
)

// page is what every template gets.
type page struct {
	Title   string
	Session *server.ConsoleSession
	Problem *problem
	Data    any
}

// Can reports whether the signed-in role may perform the act named.
func (p page) Can(act string) bool {
	return p.Session != nil && server.Allowed(p.Session.Role, server.Action(act))
}

// render executes the page template name; a template failure is logged
// and answered 500 without a half-written page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, rq *request, data any) {
	p := page{Data: data}
	if rq != nil {
		p.Session = &rq.Session
	}
	if pr, ok := data.(problem); ok {
		p.Problem = &pr
	}
	t, ok := c.pages[name]
	if !ok {
		c.log.Error("console: no such page template", "page", name)
		http.Error(w, internalMessage, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("console: rendering failed", "page", name, "err", err)
		http.Error(w, internalMessage, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail answers err as an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, rq *request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	p := asProblem(err)
	if p.Status == http.StatusInternalServerError {
		c.log.Error("console: internal error", "path", r.URL.Path, "err", err)
	}
	c.render(w, r, p.Status, "error", rq, p)
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	sess, ok := c.session(w, r)
	if !ok {
		http.Redirect(w, r, "/sign-in", http.StatusSeeOther)
		return
	}
	switch {
	case server.Allowed(sess.Role, server.ActionLookup):
		http.Redirect(w, r, "/search", http.StatusSeeOther)
	case server.Allowed(sess.Role, server.ActionAuditQuery):
		http.Redirect(w, r, "/audit", http.StatusSeeOther)
	default:
		c.render(w, r, http.StatusOK, "home", &request{Session: sess}, nil)
	}
}
