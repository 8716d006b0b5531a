package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
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

// serverReasons returns the values of the server.Reason constants in
// declaration order, read from server/errors.go, so that a constant added
// there without a proto value fails TestReasonsListedInProto.
func serverReasons(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					t.Fatalf("a Reason constant is not a string literal: %T", v)
				}
				r, _ := strconv.Unquote(lit.Value)
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no Reason constants found in server/errors.go")
	}
	return out
}

// Every server.Reason is a value of enum ErrorReason and vice versa, in the
// same order (both lists are append only): the i-th constant is
// ERROR_REASON_<value> = i+1.
func TestReasonsListedInProto(t *testing.T) {
	reasons := serverReasons(t)
	for i, r := range reasons {
		name := "ERROR_REASON_" + r
		n, ok := hotlinev1.ErrorReason_value[name]
		switch {
		case !ok:
			t.Errorf("server.Reason %q has no value %s in enum ErrorReason (proto/hotline/v1/common.proto)", r, name)
		case int(n) != i+1:
			t.Errorf("%s = %d, but it is server.Reason number %d: both lists are append only, in the same order", name, n, i+1)
		}
	}
	if got, want := len(hotlinev1.ErrorReason_value), len(reasons)+1; got != want {
		t.Errorf("enum ErrorReason has %d values, server/errors.go %d reasons (+ UNSPECIFIED): add the missing server.Reason", got, len(reasons))
		for name := range hotlinev1.ErrorReason_value {
			r := strings.TrimPrefix(name, "ERROR_REASON_")
			if name != "ERROR_REASON_UNSPECIFIED" && !slices.Contains(reasons, r) {
				t.Errorf("enum value %s has no server.Reason %q", name, r)
			}
		}
	}
}

// Every Code's default reason is a listed one.
func TestDefaultReasonsListed(t *testing.T) {
	for c := range codeTable {
		r := (&server.Error{Code: c}).ReasonOf()
		if _, ok := hotlinev1.ErrorReason_value["ERROR_REASON_"+string(r)]; !ok {
			t.Errorf("code %q defaults to reason %q, not in enum ErrorReason", c, r)
		}
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
		{name: "reason/default-of-code", err: server.Errorf(server.EPrecondition, "no"), code: codes.FailedPrecondition,
			check: wantInfo("FAILED_PRECONDITION", nil)},
		{name: "reason/specific-wins-over-default", err: &server.Error{Code: server.EPrecondition, Reason: server.ReasonDeviceOnHold, Message: "on hold"},
			code: codes.FailedPrecondition, check: wantInfo("DEVICE_ON_HOLD", nil)},
		{name: "reason/invalid-names-field", err: server.Invalid("ticket", "ticket is required"), code: codes.InvalidArgument,
			check: wantInfo("INVALID_ARGUMENT", map[string]string{"field": "ticket"})},
		{name: "reason/invalid-without-field-says-request", err: server.Errorf(server.EInvalid, "bad"), code: codes.InvalidArgument,
			check: wantInfo("INVALID_ARGUMENT", map[string]string{"field": "request"})},
		{name: "reason/device-not-found-with-near-matches", err: &server.Error{Code: server.ENotFound, Reason: server.ReasonDeviceNotFound, Field: "serial", Message: "no device", NearMatches: []string{"A#1"}},
			code: codes.NotFound, check: wantInfo("DEVICE_NOT_FOUND", map[string]string{"field": "serial", "near_matches": "A#1"})},
		{name: "reason/role-not-allowed-lists-roles", err: &server.Error{Code: server.EPermission, Roles: []server.Role{server.RoleSupervisor, server.RoleAuditor}, Message: "no"},
			code: codes.PermissionDenied, check: wantInfo("ROLE_NOT_ALLOWED", map[string]string{"roles": "supervisor,auditor"})},
		{name: "reason/permission-with-field", err: &server.Error{Code: server.EPermission, Reason: server.ReasonOverrideNotAllowed, Field: "override_reason", Message: "no"},
			code: codes.PermissionDenied, check: wantInfo("OVERRIDE_NOT_ALLOWED", map[string]string{"field": "override_reason"})},
		{name: "reason/limit-carries-count-max-window-retry-at",
			err: &server.Error{Code: server.ELimit, Reason: server.ReasonLimitPerAgent, Limit: "per-agent", Count: 20, Max: 20, Window: 24 * time.Hour,
				RetryAfter: time.Date(2031, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)), Message: "limit"},
			code: codes.ResourceExhausted,
			check: wantInfo("LIMIT_PER_AGENT", map[string]string{"limit": "per-agent", "count": "20", "max": "20", "window": "24h0m0s",
				"retry_at": "2031-01-02T02:04:05Z"})},
		{name: "reason/limit-without-name-says-issuance", err: server.Errorf(server.ELimit, "limit"), code: codes.ResourceExhausted,
			check: wantInfo("LIMIT_PER_DEVICE", map[string]string{"limit": "issuance"})},
		{name: "reason/sequence-wrap-retry-at-and-retry-info",
			err:  &server.Error{Code: server.EUnavailable, Reason: server.ReasonSequenceWrap, Message: "later", RetryAfter: time.Now().Add(5 * time.Minute).Truncate(time.Second)},
			code: codes.Unavailable,
			check: func(t *testing.T, st *status.Status) {
				ei := detail[*errdetails.ErrorInfo](st)
				if ei == nil || ei.Reason != "SEQUENCE_WRAP" {
					t.Fatalf("ErrorInfo = %v", ei)
				}
				at, err := time.Parse(time.RFC3339, ei.Metadata["retry_at"])
				if err != nil || at.Location() != time.UTC || time.Until(at) < 4*time.Minute {
					t.Errorf("retry_at = %q (%v)", ei.Metadata["retry_at"], err)
				}
				if ri := detail[*errdetails.RetryInfo](st); ri == nil {
					t.Error("no RetryInfo")
				}
			}},
		{name: "reason/past-retry-at-still-sent-without-retry-info",
			err:  &server.Error{Code: server.EUnavailable, Message: "later", RetryAfter: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
			code: codes.Unavailable,
			check: func(t *testing.T, st *status.Status) {
				wantInfo("UNAVAILABLE", map[string]string{"retry_at": "2020-01-01T00:00:00Z"})(t, st)
				if ri := detail[*errdetails.RetryInfo](st); ri != nil {
					t.Errorf("RetryInfo %v for a past time", ri)
				}
			}},
		{name: "reason/internal-carries-only-the-reason", err: server.Internal(secret, "issuing"), code: codes.Internal,
			check: wantInfo("INTERNAL", nil)},
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

// wantInfo checks the ErrorInfo's domain, reason and exact metadata.
func wantInfo(reason string, md map[string]string) func(t *testing.T, st *status.Status) {
	return func(t *testing.T, st *status.Status) {
		t.Helper()
		ei := detail[*errdetails.ErrorInfo](st)
		if ei == nil {
			t.Fatal("no ErrorInfo")
		}
		if ei.Domain != "hotline.v1" || ei.Reason != reason {
			t.Errorf("ErrorInfo domain %q reason %q, want hotline.v1 %q", ei.Domain, ei.Reason, reason)
		}
		if len(ei.Metadata) != len(md) {
			t.Errorf("metadata %v, want %v", ei.Metadata, md)
		}
		for k, v := range md {
			if ei.Metadata[k] != v {
				t.Errorf("metadata[%q] = %q, want %q (all: %v)", k, ei.Metadata[k], v, ei.Metadata)
			}
		}
	}
}
