package grpcserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAccessLogNamesTheCallItsActorNeverTheToken: every call's end is
// logged with its method, code, duration and the staff member who made
// it; a refused token's call has no actor, and no line ever carries the
// bearer token (a log reader must not be able to replay it).
func TestAccessLogNamesTheCallItsActorNeverTheToken(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	_, gk, _ := ed25519.GenerateKey(rand.Reader)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	svc := server.NewService(db, &testKeyring{signer: gk})
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	svc.Logger = log
	svc.AuditLog = testAuditLog(db.Pool())
	issuer, err := server.NewStaffIssuer("staff-test-1", sk)
	if err != nil {
		t.Fatal(err)
	}
	conn := serveOn(t, svc, issuer, log)
	keys := hotlinev1.NewKeyServiceClient(conn)

	tok, err := issuer.Issue("log-agent", server.RoleAgent, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.GetGrantKeys(withToken(tok), &hotlinev1.GetGrantKeysRequest{}); err != nil {
		t.Fatal(err)
	}
	forged := tok[:len(tok)-4] + "AAAA"
	if _, err := keys.GetGrantKeys(withToken(forged), &hotlinev1.GetGrantKeysRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("forged token: %v, want Unauthenticated", err)
	}

	var calls []map[string]any
	for _, l := range buf.lines(t) {
		if l["msg"] == "finished call" {
			calls = append(calls, l)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("%d access log lines, want 2: %v", len(calls), calls)
	}
	ok, refused := calls[0], calls[1]
	for k, want := range map[string]any{"grpc.service": "hotline.v1.KeyService", "grpc.method": "GetGrantKeys",
		"grpc.method_type": "unary", "grpc.code": "OK", "actor": "log-agent", "role": "agent", "level": "INFO"} {
		if ok[k] != want {
			t.Errorf("successful call: %s = %v, want %v (line %v)", k, ok[k], want, ok)
		}
	}
	if _, has := ok["grpc.time_ms"].(float64); !has {
		t.Errorf("successful call: no grpc.time_ms: %v", ok)
	}
	if _, has := ok["peer.address"]; !has {
		t.Errorf("successful call: no peer.address: %v", ok)
	}
	if refused["grpc.code"] != "Unauthenticated" || refused["actor"] != nil {
		t.Errorf("refused call: %v, want code Unauthenticated and no actor", refused)
	}
	buf.mu.Lock()
	all := buf.b.String()
	buf.mu.Unlock()
	for _, secret := range []string{tok, forged, tok[strings.LastIndexByte(tok, '.')+1:]} {
		if strings.Contains(all, secret) {
			t.Fatal("the log carries a bearer token or its signature")
		}
	}
}
