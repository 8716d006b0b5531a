package grpcserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/audit"
	"github.com/dvrhotline/hotline/server/postgres"
)

// The test audit key: what the keyring's audit key is in production.
var (
	auditKID = "audit-test-1"
	auditKey = func() ed25519.PrivateKey {
		s := sha256.Sum256([]byte("grpc audit key"))
		return ed25519.NewKeyFromSeed(s[:])
	}()
)

// testAuditLog is the server/audit adapter over pool, trusting the test
// audit key.
func testAuditLog(pool *pgxpool.Pool) *audit.Log {
	return &audit.Log{DB: pool, Trusted: func() map[string]ed25519.PublicKey {
		return map[string]ed25519.PublicKey{auditKID: auditKey.Public().(ed25519.PublicKey)}
	}}
}

// seal links every committed event into the chain, as the server's sealer
// does every few seconds.
func seal(t *testing.T) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := audit.NewSealer(pool, auditKID, auditKey).SealOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// openStore is a second store on the test database, for setting up events.
func openStore(t *testing.T) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// eventsBy returns the events of actor, newest first, as an auditor sees them.
func (e *env) eventsBy(t *testing.T, actor string) []*hotlinev1.AuditEvent {
	t.Helper()
	resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{Actor: actor, PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

// TestRefusalsAreEvidence: every kind of refusal of an authenticated
// staff member's act is an audit event, outcome refused, its detail
// saying why.
func TestRefusalsAreEvidence(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	full := e.register(t, 0)
	for range 3 { // the per-device limit
		if _, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(full)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		role   server.Role
		call   func(ctx context.Context) error
		code   codes.Code
		action server.Action
		detail string // the detail's first word
	}{
		{"refused/permission-denied", server.RoleAuditor, func(ctx context.Context) error {
			_, err := e.recovery.IssueTemporaryPassword(ctx, issueReq(sn))
			return err
		}, codes.PermissionDenied, server.ActionIssue, "permission_denied"},
		{"refused/permission-denied-audit-export", server.RoleAgent, func(ctx context.Context) error {
			st, err := e.audit.ExportEvents(ctx, &hotlinev1.ExportEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.PermissionDenied, server.ActionAuditExport, "permission_denied"},
		{"refused/permission-denied-before-a-bad-page-token", server.RoleAgent, func(ctx context.Context) error {
			_, err := e.audit.QueryEvents(ctx, &hotlinev1.QueryEventsRequest{PageToken: "forged"})
			return err
		}, codes.PermissionDenied, server.ActionAuditQuery, "permission_denied"},
		{"refused/over-limit", server.RoleAgent, func(ctx context.Context) error {
			_, err := e.recovery.IssueTemporaryPassword(ctx, issueReq(full))
			return err
		}, codes.ResourceExhausted, server.ActionIssue, "limit=per-device"},
		{"refused/owner-mismatch", server.RoleAgent, func(ctx context.Context) error {
			resp, err := e.devices.CheckOwner(ctx, &hotlinev1.CheckOwnerRequest{Serial: sn, ClaimedContact: "mallory@example.com"})
			if err == nil && resp.GetMatched() {
				return errors.New("matched")
			}
			return err
		}, codes.OK, server.ActionOwnerCheck, "owner_mismatch"},
		{"refused/malformed-serial", server.RoleAgent, func(ctx context.Context) error {
			_, err := e.recovery.IssueTemporaryPassword(ctx, issueReq("JZ6OES#2017-13-01#3#DVR1101134C08011"))
			return err
		}, codes.InvalidArgument, server.ActionIssue, "invalid:serial"},
		{"refused/malformed-audit-filter", server.RoleAuditor, func(ctx context.Context) error {
			_, err := e.audit.Summarize(ctx, &hotlinev1.SummarizeRequest{
				StartTime: timestamppb.New(time.Now()), EndTime: timestamppb.New(time.Now().Add(-time.Hour))})
			return err
		}, codes.InvalidArgument, server.ActionAuditSummary, "invalid:end_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject := "refusal-" + strings.ReplaceAll(tt.name, "/", "-") + "-" + server.NewUUID()[:8]
			wantCode(t, tt.call(e.asSubject(t, subject, tt.role)), tt.code)
			evs := e.eventsBy(t, subject)
			if len(evs) != 1 {
				t.Fatalf("%d events by %s, want 1: %v", len(evs), subject, evs)
			}
			ev := evs[0]
			reason, _, _ := strings.Cut(ev.GetDetail(), " ")
			if ev.GetOutcome() != hotlinev1.Outcome_OUTCOME_REFUSED || ev.GetAction() != string(tt.action) || reason != tt.detail ||
				ev.GetRole() != roleProto(tt.role) || ev.GetClientAddr() == "" {
				t.Errorf("event %v: want %s refused %q by %s", ev, tt.action, tt.detail, tt.role)
			}
		})
	}
}

func roleProto(r server.Role) hotlinev1.Role {
	return hotlinev1.Role(hotlinev1.Role_value["ROLE_"+strings.ToUpper(string(r))])
}

// TestExportEvents: the export streams every matching event, oldest first,
// across several chunks, and is itself recorded.
func TestExportEvents(t *testing.T) {
	e := start(t)
	db := openStore(t)
	ctx := context.Background()
	sn := newSerial()
	actor := "export-" + server.NewUUID()[:8]
	const n = 700 // more than two chunks
	for i := range n {
		ev := server.AuditEvent{Actor: actor, Role: server.RoleAgent, Action: server.ActionLookup, Outcome: server.OutcomeSuccess, Serial: sn}
		if i%7 == 0 {
			ev.Outcome, ev.Detail = server.OutcomeRefused, "not_found"
		}
		if err := db.Audit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	export := func(t *testing.T, r *hotlinev1.ExportEventsRequest, as context.Context) []*hotlinev1.AuditEvent {
		t.Helper()
		st, err := e.audit.ExportEvents(as, r)
		if err != nil {
			t.Fatal(err)
		}
		var out []*hotlinev1.AuditEvent
		chunks := 0
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			out = append(out, resp.GetEvents()...)
		}
		if len(out) > 256 && chunks < 2 {
			t.Errorf("%d events in %d chunk(s): not streamed", len(out), chunks)
		}
		return out
	}
	for _, sup := range []server.Role{server.RoleAuditor, server.RoleSupervisor} {
		t.Run("success/all-of-a-serial/"+string(sup), func(t *testing.T) {
			subject := "exporter-" + server.NewUUID()[:8]
			got := export(t, &hotlinev1.ExportEventsRequest{Serial: sn}, e.asSubject(t, subject, sup))
			if len(got) != n {
				t.Fatalf("exported %d events, want %d", len(got), n)
			}
			if !slices.IsSortedFunc(got, func(a, b *hotlinev1.AuditEvent) int {
				if c := a.GetTime().AsTime().Compare(b.GetTime().AsTime()); c != 0 {
					return c
				}
				return int(a.GetId() - b.GetId())
			}) {
				t.Error("not oldest first")
			}
			recorded := e.eventsBy(t, subject)
			if len(recorded) != 1 || recorded[0].GetAction() != string(server.ActionAuditExport) ||
				recorded[0].GetOutcome() != hotlinev1.Outcome_OUTCOME_SUCCESS || !strings.Contains(recorded[0].GetDetail(), "serial="+sn) {
				t.Errorf("the export is recorded as %v", recorded)
			}
		})
	}
	t.Run("success/filters-combine", func(t *testing.T) {
		got := export(t, &hotlinev1.ExportEventsRequest{Serial: sn, Actor: actor, Action: string(server.ActionLookup),
			Outcome: hotlinev1.Outcome_OUTCOME_REFUSED, StartTime: timestamppb.New(time.Now().Add(-time.Hour)),
			EndTime: timestamppb.New(time.Now().Add(time.Minute))}, e.as(t, server.RoleAuditor))
		if len(got) != (n+6)/7 {
			t.Fatalf("exported %d refused events, want %d", len(got), (n+6)/7)
		}
		for _, ev := range got {
			if ev.GetOutcome() != hotlinev1.Outcome_OUTCOME_REFUSED || ev.GetSerial() != sn || ev.GetActor() != actor {
				t.Fatalf("event %v does not match the filters", ev)
			}
		}
		if got := export(t, &hotlinev1.ExportEventsRequest{Serial: sn, EndTime: timestamppb.New(time.Now().Add(-time.Hour))},
			e.as(t, server.RoleAuditor)); len(got) != 0 {
			t.Errorf("exported %d events before the range", len(got))
		}
	})
	t.Run("invalid/bad-serial", func(t *testing.T) {
		st, err := e.audit.ExportEvents(e.as(t, server.RoleAuditor), &hotlinev1.ExportEventsRequest{Serial: "nonsense!"})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, err, codes.InvalidArgument)
	})
}

// TestSummarize: exact counts for a constructed scenario (the tests of
// this package run one at a time, so the time range holds only it).
func TestSummarize(t *testing.T) {
	e := start(t)
	d1, d2 := e.register(t, 0), e.register(t, 0)
	u := server.NewUUID()[:8]
	agentA, agentB, sup := "sum-a-"+u, "sum-b-"+u, "sum-s-"+u
	from := time.Now()
	issue := func(subject string, role server.Role, sn, override string) error {
		r := issueReq(sn)
		r.OverrideReason = override
		_, err := e.recovery.IssueTemporaryPassword(e.asSubject(t, subject, role), r)
		return err
	}
	for _, step := range []struct {
		subject  string
		role     server.Role
		sn       string
		override string
		want     codes.Code
	}{
		{agentA, server.RoleAgent, d1, "", codes.OK},
		{agentA, server.RoleAgent, d1, "", codes.OK},
		{agentA, server.RoleAgent, d2, "", codes.OK},
		{agentB, server.RoleAgent, d1, "", codes.OK},
		{agentB, server.RoleAgent, d1, "", codes.ResourceExhausted},                  // limit=per-device
		{sup, server.RoleSupervisor, d1, "owner on site with the invoice", codes.OK}, // override
		{"sum-p-" + u, server.RoleProvisioner, d2, "", codes.PermissionDenied},       // permission_denied
		{agentA, server.RoleAgent, "JZ6OES#2017-08-01#3#DVR11011!!", "", codes.InvalidArgument},
	} {
		if got := status.Code(issue(step.subject, step.role, step.sn, step.override)); got != step.want {
			t.Fatalf("issue by %s on %s: %v, want %v", step.subject, step.sn, got, step.want)
		}
	}
	if resp, err := e.devices.CheckOwner(e.asSubject(t, agentB, server.RoleAgent), &hotlinev1.CheckOwnerRequest{Serial: d2, ClaimedContact: "x@example.com"}); err != nil || resp.GetMatched() {
		t.Fatalf("check owner %v %v", resp, err)
	}
	to := time.Now()

	sum, err := e.audit.Summarize(e.as(t, server.RoleAuditor), &hotlinev1.SummarizeRequest{StartTime: timestamppb.New(from), EndTime: timestamppb.New(to)})
	if err != nil {
		t.Fatal(err)
	}
	perAgent := map[string][2]int64{}
	for _, d := range sum.GetIssuancesPerAgentDay() {
		c := perAgent[d.GetActor()]
		perAgent[d.GetActor()] = [2]int64{c[0] + d.GetCount(), c[1] + d.GetOverrides()}
		if day := d.GetDay(); day != from.UTC().Format(time.DateOnly) && day != to.UTC().Format(time.DateOnly) {
			t.Errorf("day %q", day)
		}
	}
	if want := map[string][2]int64{agentA: {3, 0}, agentB: {1, 0}, sup: {1, 1}}; !sameCounts(perAgent, want) {
		t.Errorf("issuances per agent (count, overrides) %v, want %v", perAgent, want)
	}
	rep := sum.GetRepeatedDevices()
	if len(rep) != 1 || rep[0].GetSerial() != d1 || rep[0].GetCount() != 4 || rep[0].GetActors() != 3 ||
		!rep[0].GetFirstTime().AsTime().Before(rep[0].GetLastTime().AsTime()) || sum.GetRepeatedDevicesTruncated() {
		t.Errorf("repeated devices %v, want only %s with 4 issuances by 3 staff", rep, d1)
	}
	refusals := map[string]int64{}
	for _, r := range sum.GetRefusals() {
		refusals[r.GetAction()+" "+r.GetReason()] += r.GetCount()
	}
	want := map[string]int64{
		"recovery.issue limit=per-device":   1,
		"recovery.issue permission_denied":  1,
		"recovery.issue invalid:serial":     1,
		"device.owner_check owner_mismatch": 1,
	}
	if !sameCounts(refusals, want) {
		t.Errorf("refusals %v, want %v", refusals, want)
	}
	t.Run("invalid/range-too-long", func(t *testing.T) {
		_, err := e.audit.Summarize(e.as(t, server.RoleSupervisor), &hotlinev1.SummarizeRequest{
			StartTime: timestamppb.New(time.Now().AddDate(-2, 0, 0))})
		wantCode(t, err, codes.InvalidArgument)
	})
}

func sameCounts[V comparable](got, want map[string]V) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// TestCheckpointAndVerify: verify passes on a sealed log, names an event
// an owner changed, and round-trips a checkpoint kept outside.
func TestCheckpointAndVerify(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	if _, err := e.recovery.IssueTemporaryPassword(e.as(t, server.RoleAgent), issueReq(sn)); err != nil {
		t.Fatal(err)
	}
	seal(t)
	auditorName := "auditor-" + server.NewUUID()[:8]
	auditor := e.asSubject(t, auditorName, server.RoleAuditor)

	cp, err := e.audit.GetCheckpoint(auditor, &hotlinev1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := audit.ParseCheckpoint([]byte(cp.GetText()))
	if err != nil || parsed.Size != cp.GetSize() || parsed.Head.String() != cp.GetHead() || parsed.KID != auditKID || cp.GetKid() != auditKID ||
		!parsed.Time.Equal(cp.GetTime().AsTime()) || cp.GetSize() < 2 {
		t.Fatalf("checkpoint %v parses as %+v, %v", cp, parsed, err)
	}

	r, err := e.audit.VerifyLog(auditor, &hotlinev1.VerifyLogRequest{Checkpoint: cp.GetText()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetOk() || r.GetFirstProblem() != nil || !r.GetExternalCheckpointVerified() || r.GetSealed() < cp.GetSize() ||
		r.GetCheckpointsVerified() < 1 || r.GetEvents() != r.GetSealed()+r.GetUnsealed() {
		t.Fatalf("verify of a sound log: %v", r)
	}
	t.Run("invalid/altered-checkpoint", func(t *testing.T) {
		bad := strings.Replace(cp.GetText(), "size ", "size 1", 1)
		_, err := e.audit.VerifyLog(e.as(t, server.RoleSupervisor), &hotlinev1.VerifyLogRequest{Checkpoint: bad})
		st := wantCode(t, err, codes.InvalidArgument)
		if !hasField(st.Details(), "checkpoint") {
			t.Errorf("details %v lack the field checkpoint", st.Details())
		}
		_, err = e.audit.VerifyLog(auditor, &hotlinev1.VerifyLogRequest{Checkpoint: "hello"})
		wantCode(t, err, codes.InvalidArgument)
	})
	t.Run("success/verifications-are-recorded", func(t *testing.T) {
		subject := "verifier-" + server.NewUUID()[:8]
		as := e.asSubject(t, subject, server.RoleAuditor)
		if _, err := e.audit.GetCheckpoint(as, &hotlinev1.GetCheckpointRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.audit.VerifyLog(as, &hotlinev1.VerifyLogRequest{}); err != nil {
			t.Fatal(err)
		}
		evs := e.eventsBy(t, subject)
		if len(evs) != 2 || evs[0].GetAction() != string(server.ActionAuditVerify) || !strings.HasPrefix(evs[0].GetDetail(), "ok=true ") ||
			evs[1].GetAction() != string(server.ActionAuditCheckpoint) {
			t.Errorf("recorded %v", evs)
		}
	})

	// The owner switches the append-only trigger off and changes a field
	// of a sealed event: the issuance's.
	owner, err := pgx.Connect(context.Background(), testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close(context.Background()) })
	var id int64
	var ticket string
	if err := owner.QueryRow(context.Background(), `SELECT e.id, e.ticket FROM audit_events e JOIN audit_seals s ON s.event_id = e.id
		WHERE e.serial = $1 AND e.action = 'recovery.issue'`, sn).Scan(&id, &ticket); err != nil {
		t.Fatal(err)
	}
	tamper := func(ticket string) {
		t.Helper()
		for _, q := range []string{"ALTER TABLE audit_events DISABLE TRIGGER USER",
			"UPDATE audit_events SET ticket = '" + ticket + "' WHERE id = " + itoa(id),
			"ALTER TABLE audit_events ENABLE TRIGGER USER"} {
			if _, err := owner.Exec(context.Background(), q); err != nil {
				t.Fatal(err)
			}
		}
	}
	tamper("T-0000")
	t.Cleanup(func() { tamper(ticket) }) // the chain verifies again for later tests
	r, err = e.audit.VerifyLog(auditor, &hotlinev1.VerifyLogRequest{Checkpoint: cp.GetText()})
	if err != nil {
		t.Fatal(err)
	}
	if p := r.GetFirstProblem(); r.GetOk() || p.GetKind() != string(audit.ProblemChanged) || p.GetEventId() != id || p.GetSeq() == 0 ||
		!strings.Contains(p.GetMessage(), itoa(id)) {
		t.Fatalf("verify after changing event %d: %v", id, r)
	}
	evs := e.eventsBy(t, auditorName)
	if len(evs) == 0 || !strings.Contains(evs[0].GetDetail(), "ok=false") || !strings.Contains(evs[0].GetDetail(), "event="+itoa(id)) {
		t.Errorf("the failed verification is recorded as %v", evs[:min(1, len(evs))])
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestAuditLogNotConfigured: without an AuditLog the verification reads
// say so.
func TestAuditLogNotConfigured(t *testing.T) {
	e := start(t, func(s *server.Service) { s.AuditLog = nil })
	_, err := e.audit.GetCheckpoint(e.as(t, server.RoleAuditor), &hotlinev1.GetCheckpointRequest{})
	st := wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(st.Message(), "not configured") {
		t.Errorf("message %q", st.Message())
	}
	if ei := wantReason(t, st, server.ReasonAuditUnavailable); ei.GetMetadata()["retry_at"] != "" {
		t.Errorf("retry_at %q for a server that will never seal", ei.GetMetadata()["retry_at"])
	}
	_, err = e.audit.VerifyLog(e.as(t, server.RoleAuditor), &hotlinev1.VerifyLogRequest{})
	wantReason(t, wantCode(t, err, codes.FailedPrecondition), server.ReasonAuditUnavailable)
}

func hasField(details []any, field string) bool {
	for _, d := range details {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}
