package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStaySmall fails if dvr-agent links anything but the
// standard library, golang-jwt and this module's agent packages: no server
// code, no database driver, no gRPC or protobuf. The agent runs on a small
// ARM/MIPS box, and must not carry the server's secrets handling either.
func TestDependenciesStaySmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/dvrhotline/hotline/"
	forbidden := []string{module + "server", module + "proto", "github.com/jackc/pgx", "google.golang.org/grpc", "google.golang.org/protobuf"}
	for _, target := range [][2]string{{"", ""}, {"linux", "arm"}, {"linux", "arm64"}, {"linux", "mipsle"}} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
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
			allowed := dep == module+"cmd/dvr-agent" || strings.HasPrefix(dep, module+"agent/") ||
				dep == "github.com/golang-jwt/jwt/v5" || strings.HasPrefix(dep, "github.com/golang-jwt/jwt/v5/")
			if !allowed {
				t.Errorf("%v: dvr-agent depends on %s: allowed outside the standard library are only golang-jwt/jwt/v5 and %sagent/...", target, dep, module)
			}
		}
	}
}
