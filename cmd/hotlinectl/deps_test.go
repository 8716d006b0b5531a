package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStayClientSide fails if hotlinectl links server code, the
// database driver or Prometheus. The staff CLI talks to the server over
// gRPC only; what it shares with the server (the import-file reader, the
// loopback rule) lives in standard-library-only packages under proto/.
// Linking server/... would carry the server's policy, middleware and
// metrics into every staff workstation, and let a change there break the
// client unnoticed.
func TestDependenciesStayClientSide(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/dvrhotline/hotline/"
	forbidden := []string{module + "server", "github.com/jackc/pgx", "github.com/prometheus"}
	// The platforms staff run it on.
	for _, target := range [][2]string{{"", ""}, {"windows", "amd64"}, {"darwin", "arm64"}} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
		cmd.Env = os.Environ()
		if target[0] != "" {
			cmd.Env = append(cmd.Env, "GOOS="+target[0], "GOARCH="+target[1], "CGO_ENABLED=0")
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %v: %v", target, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 {
			t.Fatalf("go list %v named no dependencies: the test would pass vacuously", target)
		}
		for _, dep := range deps {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%v: hotlinectl depends on %s (forbidden: %s)", target, dep, f)
				}
			}
		}
	}
}
