package grpcserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

// What staff inside the support centre could do with their own roles, each
// tried the way the attacker did it: through the API.

// eventsOf returns the audit events of serial, oldest first, as an auditor
// reads them.
func (e *env) eventsOf(t *testing.T, serial string) []*hotlinev1.AuditEvent {
	t.Helper()
	resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{Serial: serial, PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	evs := resp.GetEvents()
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

// TestImportCannotTellARightContactGuessFromAWrongOne: a provisioner
// imports a registered serial with a guessed owner contact, once right
// and once wrong, with and without update: the answers are the same, and
// the wrong guess is on record for auditors under the device's serial.
func TestImportCannotTellARightContactGuessFromAWrongOne(t *testing.T) {
	e := start(t)
	ctx := e.as(t, server.RoleProvisioner)
	answer := func(contact string, update bool) (counts, string) {
		sn := e.register(t, 0) // registered with jane.doe@example.com
		file := "serial,model,firmware,owner_contact\n" + sn + ",WBXHD082S2T,V4.0.1," + contact + "\n"
		rep, err := e.importFile(ctx, file, &hotlinev1.ImportOptions{Update: update}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var errs []string
		for _, re := range rep.GetErrors() {
			errs = append(errs, re.GetKind().String()+" "+re.GetReason())
		}
		return countsOf(rep), strings.Join(errs, "; ")
	}
	for _, update := range []bool{false, true} {
		right, rightErrs := answer("jane.doe@example.com", update)
		wrong, wrongErrs := answer("john@example.com", update)
		if right != wrong || rightErrs != wrongErrs {
			t.Errorf("update=%v: a right guess answers %+v %q, a wrong one %+v %q: an oracle", update, right, rightErrs, wrong, wrongErrs)
		}
		if strings.Contains(wrongErrs, "j***") {
			t.Errorf("update=%v: the report shows the masked registered contact: %q", update, wrongErrs)
		}
	}

	t.Run("audited/the-wrong-guess-under-the-serial", func(t *testing.T) {
		sn := e.register(t, 0)
		file := "serial,model,firmware,owner_contact\n" + sn + ",WBXHD082S2T,V4.0.1,john@example.com\n"
		if _, err := e.importFile(ctx, file, nil, 1000); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range e.eventsOf(t, sn) {
			if ev.GetAction() == string(server.ActionImportUpdate) && ev.GetOutcome() == hotlinev1.Outcome_OUTCOME_REFUSED &&
				strings.Contains(ev.GetDetail(), "old=j***@example.com new=j***@example.com") {
				found = true
			}
		}
		if !found {
			t.Errorf("no refused %s event naming the differing contact under %s: %v", server.ActionImportUpdate, sn, e.eventsOf(t, sn))
		}
	})
}

// TestImportUpdateToAnAttackersContactIsAuditedAndNeedsASupervisor: a
// provisioner replaces a registered contact with attacker@evil.example,
// after which an agent's check-owner with it matches. The change is
// audited with both contacts masked, and for the next days an agent gets
// no code for the device; a supervisor giving a reason does.
func TestImportUpdateToAnAttackersContactIsAuditedAndNeedsASupervisor(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	file := "serial,model,firmware,owner_contact\n" + sn + ",WBXHD082S2T,V4.0.1,attacker@evil.example\n"
	rep, err := e.importFile(e.as(t, server.RoleProvisioner), file, &hotlinev1.ImportOptions{Update: true}, 1000)
	if err != nil || rep.GetUpdated() != 1 {
		t.Fatalf("import --update: %v %v", countsOf(rep), err)
	}
	var update, change *hotlinev1.AuditEvent
	for _, ev := range e.eventsOf(t, sn) {
		switch ev.GetAction() {
		case string(server.ActionImportUpdate):
			update = ev
		case string(server.ActionContactChange):
			change = ev
		}
	}
	const want = "owner_contact=changed old=j***@example.com new=a***@evil.example"
	if update == nil || !strings.Contains(update.GetDetail(), want) {
		t.Errorf("import update event %v, want its detail to hold %q", update, want)
	}
	if change == nil || change.GetOutcome() != hotlinev1.Outcome_OUTCOME_SUCCESS || !strings.Contains(change.GetDetail(), want) {
		t.Errorf("contact change event %v, want one holding %q", change, want)
	}

	agent := e.as(t, server.RoleAgent)
	own, err := e.devices.CheckOwner(agent, &hotlinev1.CheckOwnerRequest{Serial: sn, ClaimedContact: "attacker@evil.example"})
	if err != nil || !own.GetMatched() {
		t.Fatalf("check-owner with the new contact: %v %v", own, err)
	}
	req := issueReq(sn)
	req.VerificationMethod = hotlinev1.VerificationMethod_VERIFICATION_METHOD_OWNER_CONTACT_MATCHED
	_, err = e.recovery.IssueTemporaryPassword(agent, req)
	ei := wantReason(t, wantCode(t, err, codes.PermissionDenied), server.ReasonContactRecentlyChanged)
	if ei.GetMetadata()["retry_at"] == "" {
		t.Errorf("refusal %v does not say when an agent may issue again", ei)
	}

	sup := e.as(t, server.RoleSupervisor)
	req.RequestId = server.NewUUID()
	_, err = e.recovery.IssueTemporaryPassword(sup, req)
	wantReason(t, wantCode(t, err, codes.PermissionDenied), server.ReasonContactRecentlyChanged)
	req.OverrideReason = "called the owner back on the number on the invoice"
	if _, err := e.recovery.IssueTemporaryPassword(sup, req); err != nil {
		t.Fatalf("a supervisor with a reason: %v", err)
	}
}

// TestSupervisorCannotBurstCodesForOneDevice: a supervisor issuing code
// after code for one device with an override reason stops at the absolute
// cap, and the burst is on record where an auditor filters for it.
func TestSupervisorCannotBurstCodesForOneDevice(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	sup := e.asSubject(t, "sue-burst", server.RoleSupervisor)
	issued := 0
	var err error
	for range 30 {
		req := issueReq(sn)
		req.OverrideReason = "customer insists"
		if _, err = e.recovery.IssueTemporaryPassword(sup, req); err != nil {
			break
		}
		issued++
	}
	if cap := server.DefaultLimits.DeviceCap; issued != cap {
		t.Errorf("a supervisor issued %d codes for one device, want the cap %d", issued, cap)
	}
	wantReason(t, wantCode(t, err, codes.ResourceExhausted), server.ReasonDeviceCap)

	resp, err := e.audit.QueryEvents(e.as(t, server.RoleAuditor), &hotlinev1.QueryEventsRequest{
		Serial: sn, Action: string(server.ActionIssueAlert), PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var bursts, caps int
	for _, ev := range resp.GetEvents() {
		switch {
		case strings.Contains(ev.GetDetail(), server.AlertDeviceBurst):
			bursts++
		case strings.Contains(ev.GetDetail(), server.AlertDeviceCap):
			caps++
		}
	}
	if want := server.DefaultLimits.DeviceCap - server.DefaultLimits.PerDevice; bursts != want || caps != 1 {
		t.Errorf("%d burst and %d cap alerts, want %d and 1", bursts, caps, want)
	}
}

// TestReplayOfAnExpiredIssuanceIsRefused: an agent retries an issuance's
// request id after it expired, to get its code again: refused.
func TestReplayOfAnExpiredIssuanceIsRefused(t *testing.T) {
	e := start(t)
	sn := e.register(t, 0)
	agent := e.as(t, server.RoleAgent)
	req := issueReq(sn)
	first, err := e.recovery.IssueTemporaryPassword(agent, req)
	if err != nil {
		t.Fatal(err)
	}
	// A day passes: the issuance is moved back 25 hours, with the proof the
	// service would have given it then (so that only its age differs).
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	db, err := postgres.Open(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	list, err := db.Issuances(ctx, server.Actor{Subject: "test", Role: server.RoleSupervisor}, sn, 0, 1)
	if err != nil || len(list) != 1 {
		t.Fatalf("stored issuance: %v, %v", list, err)
	}
	old := list[0]
	old.IssuedAt, old.ExpiresAt = old.IssuedAt.Add(-25*time.Hour), old.ExpiresAt.Add(-25*time.Hour)
	proof, err := e.keyring.IssuanceMAC(old.KeyGeneration, server.IssuanceMACMessage(old))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `UPDATE issuances SET issued_at = $2, expires_at = $3, proof = $4 WHERE id = $1`,
		first.GetIssuanceId(), old.IssuedAt, old.ExpiresAt, proof); err != nil {
		t.Fatal(err)
	}
	_, err = e.recovery.IssueTemporaryPassword(agent, req)
	wantReason(t, wantCode(t, err, codes.FailedPrecondition), server.ReasonIssuanceExpired)
}

// TestSupervisorCannotSeeWhoInvestigatesThem: an auditor queries the log
// for a supervisor's acts; the supervisor then queries and exports the log
// and finds no trace of the auditor's reads, nor of their filters. The
// auditors still see each other's.
func TestSupervisorCannotSeeWhoInvestigatesThem(t *testing.T) {
	e := start(t)
	auditor := e.asSubject(t, "eve-investigates", server.RoleAuditor)
	for _, f := range []*hotlinev1.QueryEventsRequest{{Actor: "sue-watched"}, {Actor: "sue-watched", Action: string(server.ActionIssue)}} {
		if _, err := e.audit.QueryEvents(auditor, f); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := e.audit.ExportEvents(auditor, &hotlinev1.ExportEventsRequest{Actor: "sue-watched"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}

	sup := e.asSubject(t, "sue-watched", server.RoleSupervisor)
	seen := func(ev *hotlinev1.AuditEvent) bool {
		return ev.GetActor() == "eve-investigates" || strings.Contains(ev.GetDetail(), "sue-watched")
	}
	for _, q := range []*hotlinev1.QueryEventsRequest{{}, {Actor: "eve-investigates"}, {Action: string(server.ActionAuditQuery)}} {
		q.PageSize = 1000
		resp, err := e.audit.QueryEvents(sup, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			if seen(ev) {
				t.Errorf("query %v: the supervisor sees the auditor's read %v", q, ev)
			}
		}
	}
	ex, err := e.audit.ExportEvents(sup, &hotlinev1.ExportEventsRequest{Actor: "eve-investigates"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := ex.Recv()
		if err != nil {
			break
		}
		for _, ev := range resp.GetEvents() {
			if seen(ev) {
				t.Errorf("export: the supervisor sees the auditor's read %v", ev)
			}
		}
	}

	other := e.as(t, server.RoleAuditor)
	resp, err := e.audit.QueryEvents(other, &hotlinev1.QueryEventsRequest{Actor: "eve-investigates", PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetEvents()); n < 3 {
		t.Errorf("another auditor sees %d of eve's reads, want all 3", n)
	}
}

// TestTokenSubjectWithANulIsUnauthenticated: a staff token signed by the
// trusted issuer whose subject holds a NUL (or a newline) is refused as
// unauthenticated, never an internal error from the database.
func TestTokenSubjectWithANulIsUnauthenticated(t *testing.T) {
	e := start(t)
	now := time.Now()
	for _, sub := range []string{"bob\x00", "bob\nsue", "bob\u202e"} {
		claims := server.StaffClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: server.StaffTokenIssuer, Subject: sub, Audience: jwt.ClaimStrings{server.StaffTokenAudience},
				IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			},
			Role: server.RoleAgent,
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = "staff-test-1"
		signed, err := tok.SignedString(e.staffKey)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.devices.LookupDevice(withToken(signed), &hotlinev1.LookupDeviceRequest{Query: "DVR1101134C08011"})
		wantReason(t, wantCode(t, err, codes.Unauthenticated), server.ReasonUnauthenticated)
	}
}

// TestImportOfAnEndlessFileIsCut: a provisioner streams more rows than one
// import takes (one stream must end some time): the import is refused at
// the limit, naming it, and the rows before stay imported.
func TestImportOfAnEndlessFileIsCut(t *testing.T) {
	e := start(t, func(svc *server.Service) { svc.ImportMaxRows = 3 })
	var file strings.Builder
	file.WriteString("serial,model,firmware,owner_contact\n")
	var first string
	for i := range 5 {
		sn := newSerial()
		if i == 0 {
			first = sn
		}
		file.WriteString(sn + ",WBXHD082S2T,V3.1.0,\n")
	}
	_, err := e.importFile(e.as(t, server.RoleProvisioner), file.String(), &hotlinev1.ImportOptions{BatchSize: 1}, 1)
	st := wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(st.Message(), "more than 3 valid rows") {
		t.Errorf("refusal %q does not name the limit", st.Message())
	}
	if _, err := e.devices.LookupDevice(e.as(t, server.RoleAgent), &hotlinev1.LookupDeviceRequest{Query: first}); err != nil {
		t.Errorf("a row before the limit was not kept: %v", err)
	}
}
