package postgres_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// testURL is this package's own database, created and migrated by TestMain.
var testURL string

func TestMain(m *testing.M) {
	pgtest.Main(m, "server_postgres", &testURL, postgres.Migrate)
}

// openDB opens a pool on the package's database, closed when tb ends.
func openDB(tb testing.TB) *postgres.DB {
	tb.Helper()
	db, err := postgres.Open(context.Background(), testURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	return db
}

var serialCounter atomic.Int64

// newSerial returns a canonical serial no other test uses.
func newSerial() string {
	n := serialCounter.Add(1)
	return fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%013d", time.Now().UnixNano()%1e9*1000+n)
}

// newName returns a unique staff name with the given prefix.
func newName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), serialCounter.Add(1))
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// ownerIs is the service's judgement of a claimed owner contact.
func ownerIs(claimed string) func(server.OwnerCheckFacts) server.OwnerVerdict {
	return func(f server.OwnerCheckFacts) server.OwnerVerdict {
		return server.JudgeOwnerCheck(server.DefaultVerifyLimits, f, claimed)
	}
}

// continues is the service's rule for carrying on with import id as a.
func continues(a server.Actor, id string) func(server.ImportState) *server.Error {
	return func(st server.ImportState) *server.Error { return server.CheckImportState(a, id, st) }
}

// policy is the service's own issuing decision, signing with grant-1: the
// store tests prove that the facts it is given are right and that what it
// decides is written.
func policy(f server.IssueFacts) (server.IssueDecision, error) {
	return server.DecideIssue(f, "grant-1")
}

var (
	provisioner = server.Actor{Subject: "prov", Role: server.RoleProvisioner, ClientAddr: "127.0.0.1:5000"}
	supervisor  = server.Actor{Subject: "sup", Role: server.RoleSupervisor, ClientAddr: "127.0.0.1:5001"}
)

func agent(name string) server.Actor {
	return server.Actor{Subject: name, Role: server.RoleAgent, ClientAddr: "10.0.0.7:4242"}
}

// registerDevice registers a fresh device and returns its serial.
func registerDevice(tb testing.TB, db *postgres.DB, owner string) string {
	tb.Helper()
	s := newSerial()
	err := db.RegisterDevice(context.Background(), provisioner, server.Device{
		Serial: s, Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: owner})
	if err != nil {
		tb.Fatalf("RegisterDevice(%s): %v", s, err)
	}
	return s
}

func issueRequest(serial string) server.IssueRequest {
	return server.IssueRequest{RequestID: uuid(), Serial: serial, Ticket: "T-1001", Method: server.VerifyProofOfPurchase}
}

// wantCode fails tb unless err is a *server.Error with code.
// wantReason fails unless se's reason (ReasonOf) is r.
func wantReason(tb testing.TB, se *server.Error, r server.Reason) {
	tb.Helper()
	if got := se.ReasonOf(); got != r {
		tb.Errorf("reason %q, want %q (%v)", got, r, se)
	}
}

func wantCode(tb testing.TB, err error, code server.Code) *server.Error {
	tb.Helper()
	if got := server.ErrorCode(err); got != code || (err == nil) {
		tb.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
	se := err.(*server.Error)
	if strings.TrimSpace(se.Message) == "" {
		tb.Errorf("error %v has no message", err)
	}
	return se
}
