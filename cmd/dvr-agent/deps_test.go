package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStaySmall fails if dvr-agent links anything but the
// standard library and this module's agent packages: no server code, no
// database driver, no gRPC or protobuf, and no JWT library either (one
// registers RSA, ECDSA and HMAC at init, which the linker cannot drop: the
// armv7 build then no longer fits 3.5 MB). The agent runs on a small
// ARM/MIPS box, and must not carry the server's secrets handling either.
func TestDependenciesStaySmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/dvrhotline/hotline/"
	forbidden := []string{module + "server", module + "proto", "github.com/jackc/pgx", "google.golang.org/grpc", "google.golang.org/protobuf",
		"github.com/golang-jwt/jwt",
		module + "agent/mailer/mailtest", "github.com/emersion"}
	for _, target := range [][3]string{{"", "", ""}, {"linux", "arm", ""}, {"linux", "arm64", ""}, {"linux", "mipsle", ""}, {"", "", "smtp"}, {"linux", "arm", "smtp"}} {
		cmd := exec.Command("go", "list", "-deps", "-tags", target[2], "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
		cmd.Env = os.Environ()
		if target[0] != "" {
			cmd.Env = append(cmd.Env, "GOOS="+target[0], "GOARCH="+target[1], "CGO_ENABLED=0")
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", target, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%v: dvr-agent depends on %s (forbidden: %s)", target, dep, f)
				}
			}
			allowed := dep == module+"cmd/dvr-agent" || strings.HasPrefix(dep, module+"agent/")
			if !allowed {
				t.Errorf("%v: dvr-agent depends on %s: allowed outside the standard library is only %sagent/...", target, dep, module)
			}
		}
	}
}

// TestDefaultBuildHasNoMailer fails if the default build links the SMTP
// sender: net/smtp and crypto/tls alone would take the armv7 binary over
// its 3.5 MB budget. Only -tags smtp links it.
func TestDefaultBuildHasNoMailer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := func(tags string) map[string]bool {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").Output()
		if err != nil {
			t.Fatalf("go list -tags %q: %v", tags, err)
		}
		m := map[string]bool{}
		for _, d := range strings.Fields(string(out)) {
			m[d] = true
		}
		return m
	}
	def, smtp := deps(""), deps("smtp")
	for _, p := range []string{"github.com/dvrhotline/hotline/agent/mailer", "net/smtp", "crypto/tls", "net/mail"} {
		if def[p] {
			t.Errorf("the default build links %s", p)
		}
		if !smtp[p] {
			t.Errorf("the smtp build does not link %s", p)
		}
	}
}
