package grpcserver_test

// Replicas: several gRPC servers, each with a connection pool of its own,
// over one database, as behind a load balancer: every
// invariant (limits, sequence numbers, idempotency, audit) must stay exact.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

// replicas is n servers sharing the keyring and the staff-token issuer,
// each over its own postgres.DB (pool) on the package's database.
type replicas struct {
	issuer   *server.StaffIssuer
	devices  []hotlinev1.DeviceServiceClient
	recovery []hotlinev1.RecoveryServiceClient
}

func startReplicas(t *testing.T, n int, lim server.Limits) *replicas {
	t.Helper()
	ctx := context.Background()
	_, gk, _ := ed25519.GenerateKey(rand.Reader)
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	kr := &testKeyring{signer: gk}
	issuer, err := server.NewStaffIssuer("staff-test-1", sk)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &replicas{issuer: issuer}
	for range n {
		db, err := postgres.Open(ctx, testURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		svc := server.NewService(db, kr)
		svc.Limits, svc.Logger = lim, log
		conn := serveOn(t, svc, issuer, log)
		r.devices = append(r.devices, hotlinev1.NewDeviceServiceClient(conn))
		r.recovery = append(r.recovery, hotlinev1.NewRecoveryServiceClient(conn))
	}
	return r
}

// token returns a context carrying a token for subject in role.
func (r *replicas) token(t *testing.T, subject string, role server.Role) context.Context {
	t.Helper()
	tok, err := r.issuer.Issue(subject, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return withToken(tok)
}

// registerN registers n fresh devices through the first replica.
func (r *replicas) registerN(t *testing.T, n int) []string {
	t.Helper()
	ctx := r.token(t, fmt.Sprintf("provisioner-%d", subjects.Add(1)), server.RoleProvisioner)
	var out []string
	for range n {
		sn := newSerial()
		if _, err := r.devices[0].RegisterDevice(ctx, &hotlinev1.RegisterDeviceRequest{
			Serial: sn, Model: "WBXHD041S1T", OwnerContact: "+44 20 7946 0000", Firmware: "V4.0.1"}); err != nil {
			t.Fatalf("RegisterDevice: %v", err)
		}
		out = append(out, sn)
	}
	return out
}

// ownerConn is a direct connection to the package's database, for reading
// what the replicas committed.
func ownerConn(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// quotaSubject is the QuotaFailure violation's subject of a
// ResourceExhausted status ("per-device" or "per-agent").
func quotaSubject(st *status.Status) string {
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok && len(q.GetViolations()) > 0 {
			return q.GetViolations()[0].GetSubject()
		}
	}
	return ""
}

// call is one IssueTemporaryPassword answer.
type call struct {
	orig    int  // the original request's index
	retry   bool // a retry of orig's request id, through another replica
	replica int
	device  int
	resp    *hotlinev1.IssueTemporaryPasswordResponse
	st      *status.Status
}

// TestReplicasIssueExactly: 48 issuers through 3 replicas for 4 devices
// with a per-device limit of 3. 32 calls are fresh requests, 16 retry one
// of them through a different replica: half after its answer came back, half
// while it is still in flight (a client that timed out and retried
// elsewhere). Afterwards each device has exactly 3 issuances with sequences
// 1..3, every other fresh request got ResourceExhausted, every retry got
// its original's answer byte for byte, and audit_events holds one success
// event per issuance and one refused event per ResourceExhausted answer.
func TestReplicasIssueExactly(t *testing.T) {
	const (
		nReplicas = 3
		nDevices  = 4
		nAgents   = 6
		nOrig     = 32
		nRetry    = 16
		perDevice = 3
	)
	r := startReplicas(t, nReplicas, server.Limits{PerDevice: perDevice, PerDeviceWindow: 24 * time.Hour,
		PerAgent: 1000, PerAgentWindow: time.Hour})
	serials := r.registerN(t, nDevices)
	run := fmt.Sprintf("rep%d", subjects.Add(1))
	agents := make([]context.Context, nAgents)
	for i := range agents {
		agents[i] = r.token(t, fmt.Sprintf("%s-agent-%d", run, i), server.RoleAgent)
	}
	reqs := make([]*hotlinev1.IssueTemporaryPasswordRequest, nOrig)
	sent := make([]chan struct{}, nOrig)
	done := make([]chan struct{}, nOrig)
	for k := range reqs {
		reqs[k] = issueReq(serials[k%nDevices])
		reqs[k].RequestId = fmt.Sprintf("%s-req-%d", run, k)
		sent[k], done[k] = make(chan struct{}), make(chan struct{})
	}

	var (
		mu    sync.Mutex
		calls []call
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	issue := func(c call) {
		ctx, cancel := context.WithTimeout(agents[c.orig%nAgents], 15*time.Second)
		defer cancel()
		resp, err := r.recovery[c.replica].IssueTemporaryPassword(ctx, reqs[c.orig])
		c.resp, c.st = resp, status.Convert(err)
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
	}
	for k := range nOrig {
		wg.Go(func() {
			<-start
			close(sent[k])
			issue(call{orig: k, replica: k % nReplicas, device: k % nDevices})
			close(done[k])
		})
	}
	for j := range nRetry {
		wg.Go(func() {
			k := j // originals 0..15 cover every device and agent
			<-start
			if j%2 == 0 {
				<-done[k]
			} else {
				<-sent[k]
			}
			issue(call{orig: k, retry: true, replica: (k%nReplicas + 1 + j%2) % nReplicas, device: k % nDevices})
		})
	}
	close(start)
	wg.Wait()

	// Every answer is an issuance or the per-device limit.
	exhausted := map[string]int{} // request id -> ResourceExhausted answers
	first := map[int]call{}
	for _, c := range calls {
		switch c.st.Code() {
		case codes.OK:
		case codes.ResourceExhausted:
			if s := quotaSubject(c.st); s != "per-device" {
				t.Errorf("request %d: ResourceExhausted for %q, want per-device", c.orig, s)
			}
			exhausted[reqs[c.orig].RequestId]++
		default:
			t.Errorf("request %d (retry %v) through replica %d: %v %q", c.orig, c.retry, c.replica, c.st.Code(), c.st.Message())
		}
		if !c.retry {
			first[c.orig] = c
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// A retry got its original's answer, byte for byte.
	for _, c := range calls {
		if !c.retry {
			continue
		}
		o := first[c.orig]
		if o.replica == c.replica {
			t.Fatalf("request %d: retry went through the same replica", c.orig)
		}
		if o.st.Code() != c.st.Code() {
			t.Errorf("request %d: first answer %v, retry %v", c.orig, o.st.Code(), c.st.Code())
			continue
		}
		if c.st.Code() != codes.OK {
			continue
		}
		a, b := o.resp, c.resp
		if a.GetIssuanceId() != b.GetIssuanceId() || a.GetVoiceCode() != b.GetVoiceCode() ||
			a.GetGrant() != b.GetGrant() || a.GetSequence() != b.GetSequence() ||
			!a.GetIssuedAt().AsTime().Equal(b.GetIssuedAt().AsTime()) {
			t.Errorf("request %d: the retry got another issuance:\nfirst %v\nretry %v", c.orig, a, b)
		}
	}

	// Per device: exactly the limit, sequences 1..3, each answered.
	db := ownerConn(t)
	ctx := context.Background()
	for d, sn := range serials {
		answered := map[string]int64{}
		fresh, refused := 0, 0
		for _, c := range calls {
			if c.device != d || c.retry {
				continue
			}
			if c.st.Code() == codes.OK {
				fresh++
				answered[c.resp.GetIssuanceId()] = c.resp.GetSequence()
			} else {
				refused++
			}
		}
		if fresh != perDevice || len(answered) != perDevice {
			t.Errorf("%s: %d fresh requests issued (%d issuances), want %d", sn, fresh, len(answered), perDevice)
		}
		rows, err := db.Query(ctx, `SELECT id::text, sequence FROM issuances WHERE serial = $1 ORDER BY sequence`, sn)
		if err != nil {
			t.Fatal(err)
		}
		var (
			seqs []int64
			id   string
			seq  int64
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &seq}, func() error {
			seqs = append(seqs, seq)
			if got, ok := answered[id]; !ok || got != seq {
				t.Errorf("%s: stored issuance %s (sequence %d) was not answered as such", sn, id, seq)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs, []int64{1, 2, 3}) {
			t.Errorf("%s: stored sequences %v, want [1 2 3]", sn, seqs)
		}
		t.Logf("%s: issued %d, refused %d fresh requests", sn, fresh, refused)
	}

	// One success event per issuance (joined on issuance_id), and none
	// without one.
	var issuances, withOne, successEvents int
	err := db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM issuances WHERE serial = ANY($1)),
		(SELECT count(*) FROM issuances i WHERE serial = ANY($1) AND
			(SELECT count(*) FROM audit_events e WHERE e.issuance_id = i.id
				AND e.action = 'recovery.issue' AND e.outcome = 'success') = 1),
		(SELECT count(*) FROM audit_events WHERE serial = ANY($1) AND action = 'recovery.issue' AND outcome = 'success')`,
		serials).Scan(&issuances, &withOne, &successEvents)
	if err != nil {
		t.Fatal(err)
	}
	if issuances != nDevices*perDevice || withOne != issuances || successEvents != issuances {
		t.Errorf("%d issuances, %d with exactly one success event, %d success events; want %d of each",
			issuances, withOne, successEvents, nDevices*perDevice)
	}

	// One refused event per ResourceExhausted answer, by request id.
	rows, err := db.Query(ctx, `SELECT request_id, count(*) FROM audit_events
		WHERE serial = ANY($1) AND action = 'recovery.issue' AND outcome = 'refused'
			AND detail LIKE 'limit=per-device %' GROUP BY request_id`, serials)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	var id string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&id, &n}, func() error { events[id] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	var other int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE serial = ANY($1) AND action = 'recovery.issue'
		AND outcome = 'refused' AND detail NOT LIKE 'limit=per-device %'`, serials).Scan(&other); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(events, exhausted) || other != 0 {
		t.Errorf("refused events by request id %v (+%d others), want one per ResourceExhausted answer %v", events, other, exhausted)
	}
}

// TestReplicasAgentLimit: one agent issuing for 12 devices at once through
// 3 replicas gets exactly the per-agent limit of 5; the other 7 are
// ResourceExhausted for "per-agent", each with its refused event.
func TestReplicasAgentLimit(t *testing.T) {
	const nReplicas, calls, limit = 3, 12, 5
	r := startReplicas(t, nReplicas, server.Limits{PerDevice: 100, PerDeviceWindow: 24 * time.Hour,
		PerAgent: limit, PerAgentWindow: time.Hour})
	serials := r.registerN(t, calls)
	agent := fmt.Sprintf("busy-agent-%d", subjects.Add(1))
	ctx := r.token(t, agent, server.RoleAgent)
	var (
		mu              sync.Mutex
		issued, limited int
		wg              sync.WaitGroup
		start           = make(chan struct{})
	)
	for g := range calls {
		wg.Go(func() {
			<-start
			_, err := r.recovery[g%nReplicas].IssueTemporaryPassword(ctx, issueReq(serials[g]))
			st := status.Convert(err)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case st.Code() == codes.OK:
				issued++
			case st.Code() == codes.ResourceExhausted && quotaSubject(st) == "per-agent":
				limited++
			default:
				t.Errorf("device %d: %v %q (%s)", g, st.Code(), st.Message(), quotaSubject(st))
			}
		})
	}
	close(start)
	wg.Wait()
	if issued != limit || limited != calls-limit {
		t.Fatalf("%d issued, %d limited; want %d and %d", issued, limited, limit, calls-limit)
	}
	var ok, refused int
	err := ownerConn(t).QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE outcome = 'success' AND issuance_id IS NOT NULL),
		count(*) FILTER (WHERE outcome = 'refused' AND detail LIKE 'limit=per-agent %')
		FROM audit_events WHERE actor = $1 AND action = 'recovery.issue'`, agent).Scan(&ok, &refused)
	if err != nil {
		t.Fatal(err)
	}
	if ok != limit || refused != calls-limit {
		t.Errorf("events: %d success, %d refused; want %d and %d", ok, refused, limit, calls-limit)
	}
}
