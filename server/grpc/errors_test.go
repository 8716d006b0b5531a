package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dvrhotline/hotline/server"
)

// Every server.Code has an entry: a new code without one is a bug.
func TestCodeTableComplete(t *testing.T) {
	all := []server.Code{server.EInvalid, server.ENotFound, server.EConflict, server.EUnauthenticated,
		server.EPermission, server.ELimit, server.EPrecondition, server.EUnavailable, server.EInternal}
	for _, c := range all {
		if _, ok := codeTable[c]; !ok {
			t.Errorf("codeTable has no entry for %q", c)
		}
	}
	if len(codeTable) != len(all) {
		t.Errorf("codeTable has %d entries, the test knows %d codes: update the test", len(codeTable), len(all))
	}
}

func TestToStatus(t *testing.T) {
	secret := errors.New("pq: password authentication failed for user hotline at 10.0.0.5")
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		inMsg   string
		check   func(t *testing.T, st *status.Status)
		notInMs string
	}{
		{name: "invalid/bad-request-names-field", err: server.Invalid("ticket", "ticket is required"), code: codes.InvalidArgument, inMsg: "ticket is required",
			check: func(t *testing.T, st *status.Status) {
				br := detail[*errdetails.BadRequest](st)
				if br == nil || len(br.FieldViolations) != 1 || br.FieldViolations[0].Field != "ticket" {
					t.Errorf("BadRequest = %v", br)
				}
			}},
		{name: "not-found/near-matches-in-message-and-details", err: &server.Error{Code: server.ENotFound, Message: "no device", NearMatches: []string{"A#1", "B#2"}},
			code: codes.NotFound, inMsg: "did you mean A#1 or B#2",
			check: func(t *testing.T, st *status.Status) {
				ei := detail[*errdetails.ErrorInfo](st)
				if ei == nil || ei.Metadata["near_matches"] != "A#1,B#2" {
					t.Errorf("ErrorInfo = %v", ei)
				}
			}},
		{name: "limit/quota-failure-and-retry", err: &server.Error{Code: server.ELimit, Limit: "per-device", Message: "limit reached", RetryAfter: time.Now().Add(time.Hour)},
			code: codes.ResourceExhausted, inMsg: "limit reached",
			check: func(t *testing.T, st *status.Status) {
				qf := detail[*errdetails.QuotaFailure](st)
				if qf == nil || qf.Violations[0].Subject != "per-device" {
					t.Errorf("QuotaFailure = %v", qf)
				}
				if ri := detail[*errdetails.RetryInfo](st); ri == nil || ri.RetryDelay.AsDuration() < 59*time.Minute {
					t.Errorf("RetryInfo = %v", ri)
				}
			}},
		{name: "precondition/hold", err: server.Errorf(server.EPrecondition, "on hold"), code: codes.FailedPrecondition, inMsg: "on hold"},
		{name: "permission", err: server.Errorf(server.EPermission, "role auditor may not"), code: codes.PermissionDenied, inMsg: "may not"},
		{name: "unauthenticated", err: server.Errorf(server.EUnauthenticated, "no token"), code: codes.Unauthenticated},
		{name: "conflict", err: server.Errorf(server.EConflict, "exists"), code: codes.AlreadyExists},
		{name: "unavailable", err: server.Errorf(server.EUnavailable, "later"), code: codes.Unavailable},
		{name: "internal/generic-message-hides-cause", err: server.Internal(secret, "issuing"), code: codes.Internal, notInMs: "password"},
		{name: "internal/plain-error-hides-cause", err: fmt.Errorf("wrapped: %w", secret), code: codes.Internal, notInMs: "10.0.0.5"},
		{name: "internal/unknown-code", err: &server.Error{Code: "brand_new", Message: "x"}, code: codes.Internal},
		{name: "wrapped-server-error-keeps-code", err: fmt.Errorf("ctx: %w", server.Invalid("serial", "bad serial")), code: codes.InvalidArgument},
		{name: "cancelled", err: context.Canceled, code: codes.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			st := status.Convert(toStatus(context.Background(), log, "Test", tt.err))
			if st.Code() != tt.code {
				t.Fatalf("code = %v, want %v", st.Code(), tt.code)
			}
			if tt.inMsg != "" && !strings.Contains(st.Message(), tt.inMsg) {
				t.Errorf("message %q lacks %q", st.Message(), tt.inMsg)
			}
			if tt.notInMs != "" && strings.Contains(st.Message(), tt.notInMs) {
				t.Errorf("message %q leaks %q", st.Message(), tt.notInMs)
			}
			if tt.code == codes.Internal && !strings.Contains(logs.String(), "internal error") {
				t.Errorf("internal error not logged: %q", logs.String())
			}
			if tt.check != nil {
				tt.check(t, st)
			}
		})
	}
}

func detail[T any](st *status.Status) T {
	var zero T
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	return zero
}
