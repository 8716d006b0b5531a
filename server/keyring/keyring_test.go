package keyring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
)

func TestInitThenOpenGivesTheSameKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kr")
	k, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const s = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	a, _ := k.DeviceKey(s, 1)
	b, _ := k2.DeviceKey(s, 1)
	if !a.Equal(b) {
		t.Fatal("device key changed across a reload")
	}
	kid, _ := k2.GrantSigner()
	jwks, err := k2.GrantJWKS()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := grant.ParseJWKS(jwks)
	if err != nil || ts.Len() != 1 || !strings.Contains(string(jwks), kid) {
		t.Fatalf("jwks %s: %v", jwks, err)
	}
	if _, err := Init(dir); err == nil {
		t.Fatal("Init overwrote an existing keyring")
	}
}

func TestOpenRefusesAKeyringOthersCanRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kr")
	if _, err := Init(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, FileName), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("opened a world-readable keyring: %v", err)
	}
	os.Chmod(filepath.Join(dir, FileName), 0o600)
	os.Chmod(dir, 0o755)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("opened a keyring in a world-readable folder: %v", err)
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kr")
	k, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v %+v %#v %x %+v %v", k.masters[0], k.signing[0], k.masters, k.masters[0].Key, k.SigningKeys(), k.signing[0])
	if strings.Contains(out, fmt.Sprintf("%x", []byte(k.signing[0].Private()))[:16]) {
		t.Fatalf("a private signing key printed: %s", out)
	}
	if !strings.Contains(out, "REDACTED") || strings.Contains(out, fmt.Sprintf("%x", []byte(k.masters[0].Key))) {
		t.Fatalf("a secret printed: %s", out)
	}
}

func TestRetiredGrantKeyIsPublishedUntilItsGrantsExpire(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kr")
	k, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	retired := now.Add(-time.Hour)
	k.signing[0].Retired = &retired
	if _, ok := k.PublicKeys(PurposeGrant, now, grant.MaxLifetime)[k.signing[0].KID]; !ok {
		t.Fatal("retired an hour ago, but no longer published")
	}
	if _, ok := k.PublicKeys(PurposeGrant, now.Add(24*time.Hour), grant.MaxLifetime)[k.signing[0].KID]; ok {
		t.Fatal("still published after its last grant expired")
	}
}
