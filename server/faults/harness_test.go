package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/postgres"
)

// chaos is whether this is `make chaos` (longer runs) rather than `make test`.
var chaos = os.Getenv("HOTLINE_CHAOS") == "1"

// plan bounds one fault's run in time and requests.
type plan struct {
	clients  int           // concurrent issuing clients
	warmup   time.Duration // load before the fault
	after    time.Duration // load after the fault is over
	maxOps   int           // requests per client at most
	attempt  time.Duration // one attempt's deadline
	budget   time.Duration // one request's retries stop after this
	recovery time.Duration // goal: first success within this after the fault began

	notServing    bool // readiness must say NOT_SERVING during the fault
	alwaysServing bool // readiness must never say NOT_SERVING
}

// defaultPlan is the short plan under `make test`, the long one under `make chaos`.
func defaultPlan(recovery time.Duration) plan {
	if chaos {
		return plan{clients: 8, warmup: 5 * time.Second, after: 20 * time.Second, maxOps: 20000,
			attempt: 2 * time.Second, budget: 45 * time.Second, recovery: recovery}
	}
	return plan{clients: 4, warmup: 1500 * time.Millisecond, after: 3 * time.Second, maxOps: 2000,
		attempt: 2 * time.Second, budget: 30 * time.Second, recovery: recovery}
}

// env is a set of replicas over one database, with what the checks need.
type env struct {
	t        *testing.T
	krDir    string
	kr       *keyring.Keyring
	issuer   *server.StaffIssuer
	replicas []*replica
	direct   func() string // a URL straight to the current primary, for the checks
	serials  []string
	runs     atomic.Int64
}

// newEnv migrates the database, starts n replicas over serverURL (which
// may be multi-host or go through a proxy) and registers the devices.
func newEnv(t *testing.T, serverURL string, direct func() string, n int, extra ...string) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, krDir: filepath.Join(t.TempDir(), "keyring"), direct: direct}
	var err error
	if e.kr, err = keyring.Init(e.krDir); err != nil {
		t.Fatal(err)
	}
	kid, key := e.kr.StaffSigner()
	if e.issuer, err = server.NewStaffIssuer(kid, key); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(ctx, direct()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e.replicas = append(e.replicas, startReplica(t, i, serverURL, e.krDir, extra...))
	}
	// Enough devices that none reaches 256 codes in one 10-minute slot
	// (the voice code's sequence wrap) during a run.
	devices := 32
	if chaos {
		devices = 256
	}
	prov := e.as("provisioner", server.RoleProvisioner)
	for i := range devices {
		sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%013d", 7000000+i)
		rctx, cancel := context.WithTimeout(prov, 10*time.Second)
		_, err := e.replicas[0].devices.RegisterDevice(rctx, &hotlinev1.RegisterDeviceRequest{
			Serial: sn, Model: "WBXHD082S2T", OwnerContact: "+44 20 7946 0000", Firmware: "V4.0.1"})
		cancel()
		if err != nil {
			t.Fatalf("RegisterDevice: %v", err)
		}
		e.serials = append(e.serials, sn)
	}
	return e
}

// as is a context carrying a staff token for subject in role.
func (e *env) as(subject string, role server.Role) context.Context {
	tok, err := e.issuer.Issue(subject, role, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// op is one issuing request, retried by its request id until it is
// answered or its budget is spent.
type op struct {
	client  int
	req     *hotlinev1.IssueTemporaryPasswordRequest
	start   time.Time
	resp    *hotlinev1.IssueTemporaryPasswordResponse
	ackAt   time.Time // when the successful answer came
	ackFrom time.Time // when the attempt that succeeded began
	failed  bool      // answered with a definite refusal
	lastErr error
	tries   int
}

// definite reports whether an answer says the request was refused and
// nothing was issued: a refusal's status code, or the service's own
// SEQUENCE_WRAP (Unavailable with a retry time). Any other Unavailable,
// DeadlineExceeded, Internal, Unknown and Canceled may follow a commit
// the client never heard of: Jepsen's "unknown", retried with the same
// request id.
func definite(err error) bool {
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.Unauthenticated, codes.OutOfRange, codes.Unimplemented:
		return true
	case codes.Unavailable:
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == string(server.ReasonSequenceWrap) {
				return true
			}
		}
	}
	return false
}

// result is what one fault's run measured.
type result struct {
	Fault                          string
	Sent, Acked, Failed, Unknown   int
	UnknownApplied                 int // unknown requests the database shows issued
	Missing, NoAudit, DupSeq, Gaps int
	DifferentRetry, RetriesChecked int
	FirstSuccess                   time.Duration // after the fault began; -1 if none
	Goal                           time.Duration
	NotServing                     time.Duration // the longest span a replica's health said NOT_SERVING
	Verify                         string
	Errors                         map[string]int // final errors of unknown requests, by code
}

var (
	resultsMu sync.Mutex
	results   []result
)

// runFault drives p's load on e, calls inject after the warmup (it returns
// the instant the fault began, once the fault is over), keeps the load
// going for p.after, then checks the promise and records the figures.
func (e *env) runFault(name string, p plan, inject func() time.Time) result {
	t := e.t
	t.Helper()
	slug := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(name))
	run := fmt.Sprintf("%s-%d-%d", slug, time.Now().UnixNano(), e.runs.Add(1))
	stop := make(chan struct{})
	var (
		mu        sync.Mutex
		ops       []*op
		different atomic.Int64
		retries   atomic.Int64
		wg        sync.WaitGroup
		n         = len(e.replicas)
	)
	for c := range p.clients {
		ctx := e.as(fmt.Sprintf("%s-agent-%d", run, c), server.RoleAgent)
		rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
		wg.Go(func() {
			for k := 0; k < p.maxOps; k++ {
				select {
				case <-stop:
					return
				default:
				}
				o := &op{client: c, start: time.Now(), req: &hotlinev1.IssueTemporaryPasswordRequest{
					RequestId: fmt.Sprintf("%s-c%d-%d", run, c, k), Serial: e.serials[rng.IntN(len(e.serials))],
					Ticket: "T-" + run, VerificationMethod: hotlinev1.VerificationMethod_VERIFICATION_METHOD_PROOF_OF_PURCHASE}}
				mu.Lock()
				ops = append(ops, o)
				mu.Unlock()
				r := (c + k) % n
				for time.Since(o.start) < p.budget {
					o.tries++
					at := time.Now()
					resp, err := e.issueOn(ctx, r, o.req, p.attempt)
					if err == nil {
						o.resp, o.ackAt, o.ackFrom = resp, time.Now(), at
						break
					}
					o.lastErr = err
					if definite(err) {
						o.failed = true
						break
					}
					r = (r + 1) % n
					time.Sleep(50 * time.Millisecond)
				}
				// Every third answer is retried at once through another
				// replica, as a client that missed the answer would.
				if o.resp != nil && k%3 == 0 {
					again, err := e.issueOn(ctx, (r+1)%n, o.req, p.attempt)
					if err == nil {
						retries.Add(1)
						if !sameIssuance(o.resp, again) {
							different.Add(1)
							t.Errorf("retry of %s through replica %d answered %s, the first answer was %s", o.req.RequestId, (r+1)%n, again.GetIssuanceId(), o.resp.GetIssuanceId())
						}
					}
				}
			}
		})
	}

	// Each replica's readiness, polled through its health port.
	stopWatch := make(chan struct{})
	var notServing atomic.Int64
	var watchWG sync.WaitGroup
	for _, r := range e.replicas {
		watchWG.Go(func() {
			var since time.Time
			for {
				select {
				case <-stopWatch:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if r.status() == healthpb.HealthCheckResponse_NOT_SERVING {
					if since.IsZero() {
						since = time.Now()
					}
					if d := int64(time.Since(since)); d > notServing.Load() {
						notServing.Store(d)
					}
				} else {
					since = time.Time{}
				}
			}
		})
	}

	time.Sleep(p.warmup)
	faultAt := inject()
	time.Sleep(p.after)
	close(stop)
	wg.Wait()

	res := result{Fault: name, Goal: p.recovery, FirstSuccess: -1, Errors: map[string]int{}}
	for _, o := range ops {
		res.Sent++
		switch {
		case o.resp != nil:
			res.Acked++
			if !o.ackFrom.Before(faultAt) && (res.FirstSuccess < 0 || o.ackAt.Sub(faultAt) < res.FirstSuccess) {
				res.FirstSuccess = o.ackAt.Sub(faultAt)
			}
		case o.failed:
			res.Failed++
			t.Logf("%s: refused: %v", o.req.RequestId, o.lastErr)
		default:
			res.Unknown++
			res.Errors[status.Code(o.lastErr).String()]++
		}
	}

	// The service recovers by itself: every replica is ready again.
	close(stopWatch)
	watchWG.Wait()
	res.NotServing = time.Duration(notServing.Load())
	if p.notServing && res.NotServing == 0 {
		t.Errorf("%s: no replica reported NOT_SERVING while the database was unreachable", name)
	}
	if p.alwaysServing && res.NotServing > 0 {
		t.Errorf("%s: a replica reported NOT_SERVING for %s, though the database was reachable", name, res.NotServing)
	}
	for _, r := range e.replicas {
		if _, ok := r.waitStatus(healthpb.HealthCheckResponse_SERVING, 30*time.Second); !ok {
			t.Errorf("replica %d is not SERVING 30s after the fault ended:\n%s", r.i, r.logTail())
		}
	}

	// A retry with the same request id to any replica returns the same
	// issuance; an unknown request's retry now gets an answer.
	ctx := context.Background()
	check := ops
	if max := 300; len(check) > max {
		check = append([]*op(nil), ops...)
		rand.Shuffle(len(check), func(i, j int) { check[i], check[j] = check[j], check[i] })
		check = check[:max]
	}
	agents := map[int]context.Context{}
	for c := range p.clients {
		agents[c] = e.as(fmt.Sprintf("%s-agent-%d", run, c), server.RoleAgent)
	}
	for _, o := range check {
		if o.failed {
			continue
		}
		for ri := range n {
			again, err := e.issueOn(agents[o.client], ri, o.req, 10*time.Second)
			if err != nil {
				t.Errorf("after the fault, retry of %s through replica %d: %v", o.req.RequestId, ri, err)
				continue
			}
			if o.resp == nil {
				o.resp = again // unknown: this is the one answer from now on
				continue
			}
			res.RetriesChecked++
			if !sameIssuance(o.resp, again) {
				res.DifferentRetry++
				t.Errorf("retry of %s through replica %d answered issuance %s (sequence %d); the acknowledged one was %s (sequence %d)",
					o.req.RequestId, ri, again.GetIssuanceId(), again.GetSequence(), o.resp.GetIssuanceId(), o.resp.GetSequence())
			}
		}
	}
	res.DifferentRetry += int(different.Load())
	res.RetriesChecked += int(retries.Load())

	e.checkDatabase(ctx, ops, &res)
	resultsMu.Lock()
	results = append(results, res)
	resultsMu.Unlock()
	t.Logf("%s", res.line())
	if res.Missing+res.NoAudit+res.DupSeq+res.Gaps+res.DifferentRetry > 0 {
		t.Errorf("%s broke the promise: %s", name, res.line())
	}
	if res.Verify != "OK" {
		t.Errorf("%s: audit verify: %s", name, res.Verify)
	}
	if res.FirstSuccess < 0 {
		t.Errorf("%s: no request succeeded after the fault", name)
	} else if chaos && res.FirstSuccess > p.recovery {
		t.Errorf("%s: first success %s after the fault, goal %s", name, res.FirstSuccess.Round(time.Millisecond), p.recovery)
	}
	return res
}

// issueOn is one attempt through replica r, bounded by d.
func (e *env) issueOn(ctx context.Context, r int, req *hotlinev1.IssueTemporaryPasswordRequest, d time.Duration) (*hotlinev1.IssueTemporaryPasswordResponse, error) {
	rep := e.replicas[r]
	rep.inFlight.Add(1)
	defer rep.inFlight.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return rep.recovery.IssueTemporaryPassword(ctx, req)
}

// sameIssuance compares two answers for the same request id: the same
// issuance, sequence, code, grant and times.
func sameIssuance(a, b *hotlinev1.IssueTemporaryPasswordResponse) bool {
	return proto.Equal(a, b)
}

// checkDatabase checks the promise against the database and the audit log.
func (e *env) checkDatabase(ctx context.Context, ops []*op, res *result) {
	t := e.t
	pool, err := pgxpool.New(ctx, e.direct())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	var acked, unknown []string
	ackedByID := map[string]*op{}
	for _, o := range ops {
		if o.resp != nil && !o.ackAt.IsZero() {
			acked = append(acked, o.resp.GetIssuanceId())
			ackedByID[o.resp.GetIssuanceId()] = o
		} else if !o.failed {
			unknown = append(unknown, o.req.RequestId)
		}
	}
	// Every acknowledged issuance is stored as it was answered.
	rows, err := pool.Query(ctx, `SELECT id::text, request_id, serial, sequence FROM issuances WHERE id::text = ANY($1)`, acked)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for rows.Next() {
		var id, rid, serial string
		var seq int64
		if err := rows.Scan(&id, &rid, &serial, &seq); err != nil {
			t.Fatal(err)
		}
		o := ackedByID[id]
		if o.req.RequestId != rid || o.resp.GetSerial() != serial || o.resp.GetSequence() != seq {
			t.Errorf("issuance %s is stored as %s/%s/%d, answered as %s/%s/%d", id, rid, serial, seq, o.req.RequestId, o.resp.GetSerial(), o.resp.GetSequence())
			continue
		}
		found[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range acked {
		if !found[id] {
			res.Missing++
			t.Errorf("acknowledged issuance %s (%s) is not in the database", id, ackedByID[id].req.RequestId)
		}
	}
	if len(unknown) > 0 {
		pool.QueryRow(ctx, `SELECT count(*) FROM issuances WHERE request_id = ANY($1)`, unknown).Scan(&res.UnknownApplied)
	}
	// Every issuance has its audit event; no device has a sequence twice
	// or a gap in its sequences.
	q := func(sql string, dst *int) {
		if err := pool.QueryRow(ctx, sql).Scan(dst); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*) FROM issuances i WHERE NOT EXISTS (SELECT 1 FROM audit_events e
		WHERE e.issuance_id = i.id AND e.action = 'recovery.issue' AND e.outcome = 'success')`, &res.NoAudit)
	q(`SELECT count(*) FROM (SELECT serial, sequence FROM issuances GROUP BY 1, 2 HAVING count(*) > 1) d`, &res.DupSeq)
	q(`SELECT count(*) FROM devices d WHERE d.last_sequence <> (SELECT count(*) FROM issuances i WHERE i.serial = d.serial)
		OR (SELECT coalesce(max(sequence), 0) FROM issuances i WHERE i.serial = d.serial) <> d.last_sequence`, &res.Gaps)

	// The sealer (on whichever replica holds its lock, on the current
	// primary) seals everything, and the chain verifies.
	deadline := time.Now().Add(30 * time.Second)
	var unsealed int
	for {
		q(`SELECT count(*) FROM audit_events e WHERE NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)`, &unsealed)
		if unsealed == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep, err := audit.Verify(ctx, pool, e.kr.PublicKeys(keyring.PurposeAudit, time.Now(), audit.TrustForever), nil)
	switch {
	case err != nil:
		res.Verify = "error: " + err.Error()
	case rep.Err() != nil:
		res.Verify = "FAILED: " + rep.Err().Error()
	case unsealed > 0:
		res.Verify = fmt.Sprintf("FAILED: %d events still unsealed after 30s", unsealed)
	default:
		res.Verify = "OK"
	}
}

// line is one result as text.
func (r result) line() string {
	first := "none"
	if r.FirstSuccess >= 0 {
		first = r.FirstSuccess.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("sent %d acked %d failed %d unknown %d (applied %d) | missing %d no-audit %d dup-seq %d gaps %d different-retry %d of %d | first success %s (goal < %s) longest NOT_SERVING %s | verify %s %v",
		r.Sent, r.Acked, r.Failed, r.Unknown, r.UnknownApplied, r.Missing, r.NoAudit, r.DupSeq, r.Gaps, r.DifferentRetry, r.RetriesChecked,
		first, r.Goal, r.NotServing.Round(time.Millisecond), r.Verify, r.Errors)
}

// printTable writes every recorded result as a table.
func printTable() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	fmt.Printf("\n%-26s %6s %6s %6s %7s %7s %8s %7s %5s %9s %12s %10s %11s %s\n", "fault", "sent", "acked", "failed", "unknown",
		"missing", "no-audit", "dup-seq", "gaps", "diff-retr", "first-ok", "goal", "not-serving", "verify")
	for _, r := range results {
		first := "none"
		if r.FirstSuccess >= 0 {
			first = r.FirstSuccess.Round(time.Millisecond).String()
		}
		fmt.Printf("%-26s %6d %6d %6d %7d %7d %8d %7d %5d %9s %12s %10s %11s %s\n", r.Fault, r.Sent, r.Acked, r.Failed, r.Unknown,
			r.Missing, r.NoAudit, r.DupSeq, r.Gaps, fmt.Sprintf("%d/%d", r.DifferentRetry, r.RetriesChecked), first, "<"+r.Goal.String(),
			r.NotServing.Round(100*time.Millisecond).String(), r.Verify)
	}
	fmt.Println()
}
