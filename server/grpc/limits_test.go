package grpcserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	grpcserver "github.com/dvrhotline/hotline/server/grpc"
	"github.com/dvrhotline/hotline/server/postgres"
)

// startLimited runs a server with Limits lim over a store of its own (the
// default pool: four connections, one of them for exports), and its
// address.
func startLimited(t *testing.T, lim grpcserver.Limits) (*env, string) {
	t.Helper()
	db, err := postgres.Open(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	_, gk, _ := ed25519.GenerateKey(rand.Reader)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	svc := server.NewService(db, &testKeyring{signer: gk})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc.Logger = log
	issuer, err := server.NewStaffIssuer("staff-test-1", sk)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := server.NewStaffVerifier(issuer.PublicKeys())
	if err != nil {
		t.Fatal(err)
	}
	addr := serveConfig(t, grpcserver.Config{Service: svc, Verifier: verifier, Logger: log, Limits: lim})
	conn := dial(t, addr)
	return &env{conn: conn, issuer: issuer, staffKey: sk,
		devices: hotlinev1.NewDeviceServiceClient(conn), recovery: hotlinev1.NewRecoveryServiceClient(conn),
		audit: hotlinev1.NewAuditServiceClient(conn), keys: hotlinev1.NewKeyServiceClient(conn)}, addr
}

// dial connects with fixed 64 KiB flow-control windows: a client that
// does not read then really stops the server's sends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestUnreadExportsDoNotStarveTheIssuePath: four auditors each open an
// export of many events and never read it. Only one gets a database
// connection (the others are told to retry), lookups and issuances go on
// answering at once, and the unread export is ended after the send
// timeout, its connection freed for the next export. One auditor cannot
// hold two exports either.
func TestUnreadExportsDoNotStarveTheIssuePath(t *testing.T) {
	e, addr := startLimited(t, grpcserver.Limits{SendTimeout: 500 * time.Millisecond})
	actor := fmt.Sprintf("bulk-%d", subjects.Add(1))
	owner, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(context.Background())
	if _, err := owner.Exec(context.Background(), `INSERT INTO audit_events (actor, role, action, outcome, detail)
		SELECT $1, 'agent', 'device.lookup', 'success', repeat('x', 100) FROM generate_series(1, 20000)`, actor); err != nil {
		t.Fatal(err)
	}

	export := func(ctx context.Context, conn *grpc.ClientConn) (grpc.ServerStreamingClient[hotlinev1.ExportEventsResponse], error) {
		s, err := hotlinev1.NewAuditServiceClient(conn).ExportEvents(ctx, &hotlinev1.ExportEventsRequest{Actor: actor})
		if err != nil {
			return nil, err
		}
		_, err = s.Header() // the call has reached the handler
		return s, err
	}
	var refused int
	var held grpc.ServerStreamingClient[hotlinev1.ExportEventsResponse]
	for range 4 {
		s, err := export(e.as(t, server.RoleAuditor), dial(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		// An unread stream: only its first message (or its refusal) is
		// looked at, so that the refusal is told apart from a hold.
		if _, err := s.Recv(); err != nil {
			wantReason(t, wantCode(t, err, codes.Unavailable), server.ReasonUnavailable)
			refused++
			continue
		}
		held = s
	}
	if refused != 3 || held == nil {
		t.Fatalf("%d of 4 exports refused, want 3 (one export connection)", refused)
	}

	sn := e.register(t, 0)
	agent := e.as(t, server.RoleAgent)
	for i := range 10 {
		lctx, lcancel := context.WithTimeout(agent, 2*time.Second)
		_, err := e.devices.LookupDevice(lctx, &hotlinev1.LookupDeviceRequest{Query: sn})
		lcancel()
		if err != nil {
			t.Fatalf("lookup %d while exports are held: %v", i, err)
		}
	}
	if _, err := e.recovery.IssueTemporaryPassword(agent, issueReq(sn)); err != nil {
		t.Fatalf("issue while exports are held: %v", err)
	}

	// The held export is ended by the server once it has waited for the
	// client for SendTimeout; reading it now ends with that status.
	time.Sleep(time.Second)
	var end error
	for end == nil {
		_, end = held.Recv()
	}
	wantCode(t, end, codes.DeadlineExceeded)

	t.Run("freed/the-next-export-streams", func(t *testing.T) {
		s, err := export(e.as(t, server.RoleAuditor), dial(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			resp, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n += len(resp.GetEvents())
		}
		if n != 20000 {
			t.Errorf("the export after the freed one read %d events, want 20000", n)
		}
	})

	t.Run("refused/one-auditor-two-exports", func(t *testing.T) {
		eve := e.asSubject(t, fmt.Sprintf("eve-%d", subjects.Add(1)), server.RoleAuditor)
		first, err := export(eve, dial(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := first.Recv(); err != nil {
			t.Fatal(err)
		}
		second, err := export(eve, dial(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		_, err = second.Recv()
		wantReason(t, wantCode(t, err, codes.Unavailable), server.ReasonUnavailable)
	})
}

// TestEveryCallHasAServerSideDeadline: a client that sets no deadline
// and leaves an import stream open, or makes a call, still has it cut off
// by the server's deadline.
func TestEveryCallHasAServerSideDeadline(t *testing.T) {
	e, addr := startLimited(t, grpcserver.Limits{StreamTimeout: 300 * time.Millisecond, UnaryTimeout: time.Nanosecond})
	stream, err := hotlinev1.NewDeviceServiceClient(dial(t, addr)).ImportDevices(e.as(t, server.RoleProvisioner))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&hotlinev1.ImportDevicesRequest{}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	var resp hotlinev1.ImportDevicesResponse
	err = stream.RecvMsg(&resp) // never closing the send side: an idle stream
	wantCode(t, err, codes.DeadlineExceeded)
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("the idle stream ended after %s, want about the 300 ms deadline", d)
	}

	_, err = e.devices.LookupDevice(e.as(t, server.RoleAgent), &hotlinev1.LookupDeviceRequest{Query: "DVR1101134C08011"})
	wantCode(t, err, codes.DeadlineExceeded)
}

// TestReflectionNeedsAStaffToken: reflection (what grpcurl lists with)
// answers a staff token of any role, and nobody without one.
func TestReflectionNeedsAStaffToken(t *testing.T) {
	e := start(t)
	list := func(ctx context.Context) ([]string, error) {
		s, err := rpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		// A Send after the server ended the call is io.EOF: the status
		// comes with Recv.
		if err := s.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
			return nil, err
		}
		resp, err := s.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, sv := range resp.GetListServicesResponse().GetService() {
			names = append(names, sv.GetName())
		}
		return names, nil
	}
	_, err := list(context.Background())
	wantCode(t, err, codes.Unauthenticated)
	names, err := list(e.as(t, server.RoleAgent))
	if err != nil || len(names) < 4 {
		t.Fatalf("reflection with a token: %v %v", names, err)
	}
}

// TestConnectionFloodWaitsItsTurn: a client opening more connections than
// Limits.MaxConnections gets the extra ones served only once others
// close; those already served keep working.
func TestConnectionFloodWaitsItsTurn(t *testing.T) {
	_, addr := startLimited(t, grpcserver.Limits{MaxConnections: 2})
	check := func(conn *grpc.ClientConn, within time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	var held []*grpc.ClientConn
	for range 2 { // the test env's own connection is not open yet: two free
		c := dial(t, addr)
		if err := check(c, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	extra := dial(t, addr)
	if err := check(extra, 300*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third connection over a limit of 2: %v, want it to wait", err)
	}
	if err := check(held[0], 2*time.Second); err != nil {
		t.Errorf("a served connection stopped working: %v", err)
	}
	held[1].Close()
	if err := check(extra, 5*time.Second); err != nil {
		t.Errorf("the waiting connection once another closed: %v", err)
	}
}
