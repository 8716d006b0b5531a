// Package console is the support console: the web tool support agents,
// supervisors and auditors use at their desks, served by hotline-server on
// a listener of its own.
//
// Every act goes through server.Service in process, with the same roles,
// limits, idempotency and audit events as the gRPC API; the console's
// events carry a ClientAddr of "console:" followed by the browser's
// address, which is how an auditor tells them apart. Pages are rendered by
// html/template from files embedded in the binary; the only script is
// static/console.js (copy button, local time, one submit per form), served
// from the console itself, so a support floor without internet works.
//
// Staff sign in with OpenID Connect (authorization code flow with PKCE);
// the role comes from a configurable claim (e.g. "groups") through a
// mapping of claim values to roles. Sessions live in PostgreSQL
// (server.ConsoleStore), found by the SHA-256 of a 256-bit random id that
// only the browser's __Host- cookie holds, with idle and absolute
// timeouts. Revealing a code needs a sign-in younger than FreshAuth.
//
// Safe by construction: a strict Content-Security-Policy (no inline script
// or style), frame-ancestors 'none', cross-origin state changes refused by
// http.CrossOriginProtection on top of SameSite cookies, no state change on
// GET, and every route checked against the role policy (a refusal is
// audited by the service). Codes, grants and session ids are never logged
// and never put in a URL.
package console
