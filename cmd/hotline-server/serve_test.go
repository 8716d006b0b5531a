package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// selfSigned writes a certificate and key for 127.0.0.1 into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hotline test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeSpeaksTLSWhenGivenACertificate: with --tls-cert and --tls-key
// the server answers TLS clients that trust its certificate, and refuses
// plaintext ones.
func TestServeSpeaksTLSWhenGivenACertificate(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "keyring")
	if _, err := keyring.Init(kr); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, pool := selfSigned(t, dir)
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--keyring", kr, "--database-url", pgtest.NewDatabase(t, "tls"),
		"--listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--trust-keyring-staff-issuer"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case <-m.Ready():
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	defer func() { cancel(); <-done; m.Close() }()

	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer ccancel()
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was answered by a TLS server")
	}
}

// TestServeRefusesPlaintextOffLoopback: without TLS, a listener that is
// reachable from the network is refused before anything starts.
func TestServeRefusesPlaintextOffLoopback(t *testing.T) {
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--keyring", t.TempDir(), "--database-url", "postgres://unused", "--listen", "0.0.0.0:0"}); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refusing plaintext") {
		t.Fatalf("Run = %v, want a refusal of plaintext off loopback", err)
	}
	m.Close()
}

// TestServeRefusesAKeyringOthersCanRead: the server does not start with a
// keyring folder readable by other users.
func TestServeRefusesAKeyringOthersCanRead(t *testing.T) {
	kr := filepath.Join(t.TempDir(), "keyring")
	if _, err := keyring.Init(kr); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kr, 0o755); err != nil {
		t.Fatal(err)
	}
	m := NewMain(io.Discard, io.Discard)
	if err := m.ParseFlags([]string{"--keyring", kr, "--database-url", "postgres://unused", "--listen", "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "0700") {
		t.Fatalf("Run = %v, want a refusal naming the expected mode", err)
	}
	m.Close()
}
