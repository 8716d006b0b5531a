package console

import (
	"html/template"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// pageNames are the page templates, each parsed with layout.html.
var pageNames = []string{"home", "signin", "signedout", "error", "search", "device", "reveal", "shown", "fresh", "audit", "summary", "verify", "team", "approvals", "approval"}

var methodNames = map[server.VerificationMethod]string{
	server.VerifyOwnerContact: "owner contact", server.VerifyProofOfPurchase: "proof of purchase",
	server.VerifyInstallerAccount: "installer account", server.VerifyOther: "other",
	server.VerifyOwnerEmailCode: "owner e-mail code",
}

var funcs = template.FuncMap{
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"date":       func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"method":     func(m server.VerificationMethod) string { return methodNames[m] },
	"join":       strings.Join,
	"sub":        func(a, b int) int { return a - b },
	"approvable": func(r server.Reason) bool { return server.Approvable(r) },
	"mailstate":  mailState,
	"mailkind":   func(k server.MailKind) string { return mailKinds[k] },
	"maskmail":   maskAddresses,
}

func parsePages() (map[string]*template.Template, error) {
	m := make(map[string]*template.Template, len(pageNames))
	for _, n := range pageNames {
		t, err := template.New(n).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return nil, err
		}
		m[n] = t
	}
	return m, nil
}
