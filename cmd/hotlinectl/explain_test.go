package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// answer is a status as hotline-server sends it: code, message, an
// ErrorInfo of reason with metadata md, and more details.
func answer(t *testing.T, code codes.Code, msg, reason string, md map[string]string, more ...protoadapt.MessageV1) *status.Status {
	t.Helper()
	ds := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: "hotline.v1", Metadata: md}}, more...)
	st, err := status.New(code, msg).WithDetails(ds...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestHint(t *testing.T) {
	now := time.Date(2031, 3, 4, 10, 0, 0, 0, time.UTC)
	local := &cmd{common: common{addr: "127.0.0.1:7443"}, name: "issue"}
	remote := &cmd{common: common{addr: "hotline.example.com:443"}, name: "issue"}
	tests := []struct {
		name    string
		cmd     *cmd
		st      *status.Status
		want    string // the hint contains it
		notWant string // nor this
	}{
		{name: "hint/sequence-wrap-says-retry-at",
			st: answer(t, codes.Unavailable, "many codes in this slot", "SEQUENCE_WRAP", map[string]string{"retry_at": "2031-03-04T10:07:30Z"},
				&errdetails.RetryInfo{RetryDelay: durationpb.New(450 * time.Second)}),
			want: "retry at 10:07:30 UTC (with the same --request-id)", notWant: "running"},
		{name: "hint/sequence-wrap-without-time-still-not-server-down",
			st:   answer(t, codes.Unavailable, "later", "SEQUENCE_WRAP", nil),
			want: "retry in a few minutes", notWant: "running"},
		{name: "hint/database-busy-is-an-answer-not-a-dead-server",
			st:   answer(t, codes.Unavailable, "the database was busy", "DATABASE_BUSY", nil),
			want: "database was busy: retry in a moment", notWant: "make run"},
		{name: "hint/unavailable-with-unknown-reason-is-still-an-answer",
			st:   answer(t, codes.Unavailable, "later", "SOMETHING_NEW", map[string]string{"retry_at": "2031-03-04T10:00:05Z"}),
			want: "retry at 10:00:05 UTC", notWant: "make run"},
		{name: "hint/transport-failure-on-loopback-asks-if-the-server-runs",
			st:   status.New(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:7443: connect: connection refused\""),
			want: "is hotline-server running at 127.0.0.1:7443? (make run"},
		{name: "hint/transport-failure-remote-points-at-tls", cmd: remote,
			st:   status.New(codes.Unavailable, "connection error"),
			want: "over TLS: check HOTLINE_ADDR", notWant: "make run"},
		{name: "hint/on-hold-says-release",
			st:   answer(t, codes.FailedPrecondition, "the device is on hold", "DEVICE_ON_HOLD", nil),
			want: "a supervisor must release it first"},
		{name: "hint/other-precondition-is-not-a-hold",
			st:      answer(t, codes.FailedPrecondition, "the device is on hold (says the prose)", "FAILED_PRECONDITION", nil),
			notWant: "release"},
		{name: "hint/import-finished-says-run-again",
			st:   answer(t, codes.FailedPrecondition, "import x is finished", "IMPORT_FINISHED", nil),
			want: "begin a new one", notWant: "release"},
		{name: "hint/audit-without-key-asks-the-operator", cmd: &cmd{name: "audit checkpoint"},
			st:   answer(t, codes.FailedPrecondition, "not configured", "AUDIT_UNAVAILABLE", nil),
			want: "ask the operator", notWant: "release"},
		{name: "hint/audit-nothing-sealed-says-retry-at", cmd: &cmd{name: "audit checkpoint"},
			st:   answer(t, codes.FailedPrecondition, "no audit checkpoint yet", "AUDIT_UNAVAILABLE", map[string]string{"retry_at": "2031-03-04T10:00:05Z"}),
			want: "nothing is sealed yet: retry at 10:00:05 UTC", notWant: "operator"},
		{name: "hint/override-not-allowed-says-drop-it",
			st:   answer(t, codes.PermissionDenied, "only a supervisor may", "OVERRIDE_NOT_ALLOWED", map[string]string{"field": "override_reason"}),
			want: "drop --override-reason"},
		{name: "hint/role-may-not-give-a-field-names-the-flag",
			st:   answer(t, codes.PermissionDenied, "whatever the prose says", "ROLE_NOT_ALLOWED", map[string]string{"field": "override_reason"}),
			want: "your role may not give --override-reason"},
		{name: "hint/role-not-allowed-names-the-servers-roles", cmd: &cmd{name: "audit query"},
			st:   answer(t, codes.PermissionDenied, "role agent may not", "ROLE_NOT_ALLOWED", map[string]string{"roles": "auditor,supervisor"}),
			want: "the role auditor or supervisor"},
		{name: "hint/role-not-allowed-without-roles-uses-the-command", cmd: &cmd{name: "hold"},
			st:   answer(t, codes.PermissionDenied, "no", "ROLE_NOT_ALLOWED", nil),
			want: "the role supervisor"},
		{name: "hint/per-device-limit-says-override-or-retry-at",
			st: answer(t, codes.ResourceExhausted, "limit", "LIMIT_PER_DEVICE",
				map[string]string{"limit": "per-device", "count": "2", "max": "2", "window": "24h0m0s", "retry_at": "2031-03-05T08:00:00Z"}),
			want: "ask a supervisor to issue with --override-reason (this device had 2 of 2 in 24h), or retry at 2031-03-05 08:00 UTC"},
		{name: "hint/per-agent-limit-says-ask-a-colleague",
			st:   answer(t, codes.ResourceExhausted, "limit", "LIMIT_PER_AGENT", map[string]string{"limit": "per-agent", "count": "20", "max": "20", "window": "8h0m0s"}),
			want: "you reached your own issuance limit (you had 20 of 20 in 8h): ask a colleague"},
		{name: "hint/limit-retry-from-retry-info-when-no-retry-at",
			st:   answer(t, codes.ResourceExhausted, "limit", "LIMIT_PER_DEVICE", map[string]string{"limit": "issuance"}, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Hour)}),
			want: "or retry at 11:00:00 UTC"},
		{name: "hint/invalid-names-the-flag",
			st:   answer(t, codes.InvalidArgument, "ticket is required", "INVALID_ARGUMENT", map[string]string{"field": "ticket"}),
			want: "fix --ticket"},
		{name: "hint/device-not-found-says-check-the-label",
			st:   answer(t, codes.NotFound, "no device", "DEVICE_NOT_FOUND", map[string]string{"near_matches": "A#1"}),
			want: "check the serial on the label"},
		{name: "hint/other-not-found-is-not-about-the-label",
			st:      answer(t, codes.NotFound, "no import x", "NOT_FOUND", nil),
			notWant: "label"},
		{name: "hint/device-exists-says-look-it-up",
			st:   answer(t, codes.AlreadyExists, "already", "DEVICE_EXISTS", map[string]string{"field": "serial"}),
			want: "already registered"},
		{name: "hint/request-id-reused-says-give-a-new-one",
			st:   answer(t, codes.AlreadyExists, "already", "REQUEST_ID_REUSED", map[string]string{"field": "request_id"}),
			want: "give a new one", notWant: "already registered"},
		{name: "hint/unauthenticated-says-set-the-token",
			st:   answer(t, codes.Unauthenticated, "no staff token", "UNAUTHENTICATED", nil),
			want: "hotline-server token --subject you --role agent"},
		{name: "hint/other-domain-is-ignored",
			st: func() *status.Status {
				st, _ := status.New(codes.Unavailable, "x").WithDetails(&errdetails.ErrorInfo{Reason: "DATABASE_BUSY", Domain: "proxy.example"})
				return st
			}(),
			want: "is hotline-server running"},
		{name: "fallback/no-error-info-uses-the-code",
			st:   status.New(codes.ResourceExhausted, "limit"),
			want: "ask a supervisor to issue with --override-reason"},
		{name: "fallback/internal-says-report-it",
			st:   status.New(codes.Internal, "internal error"),
			want: "report it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cmd
			if c == nil {
				c = local
			}
			got := c.hint(tt.st, now)
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("hint %q lacks %q", got, tt.want)
			}
			if tt.want == "" && tt.notWant == "" {
				t.Fatal("the case checks nothing")
			}
			if tt.notWant != "" && strings.Contains(got, tt.notWant) {
				t.Errorf("hint %q says %q", got, tt.notWant)
			}
		})
	}
}

// Every reason the enum lists has a hint decided by its reason, not by the
// code fallback, except those whose message is the whole story.
func TestEveryReasonHasAHint(t *testing.T) {
	silent := map[string]bool{"ERROR_REASON_UNSPECIFIED": true, "ERROR_REASON_FAILED_PRECONDITION": true, "ERROR_REASON_NOT_FOUND": true,
		"ERROR_REASON_INVALID_ARGUMENT": true} // invalid: the hint needs a known field
	c := &cmd{common: common{addr: "127.0.0.1:7443"}, name: "issue"}
	for name := range hotlinev1.ErrorReason_value {
		if silent[name] {
			continue
		}
		st := answer(t, codes.Unknown, "x", strings.TrimPrefix(name, "ERROR_REASON_"), nil)
		if c.hint(st, time.Now()) == "" {
			t.Errorf("no hint for %s", name)
		}
	}
}
