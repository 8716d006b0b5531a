package grpcserver

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dvrhotline/hotline/server"
)

// errorDomain is the ErrorInfo domain of every error detail.
const errorDomain = "hotline.v1"

// codeTable is the one mapping from the service's error codes to gRPC
// status codes. A server.Code missing here is a bug and maps to Internal.
var codeTable = map[server.Code]codes.Code{
	server.EInvalid:         codes.InvalidArgument,
	server.ENotFound:        codes.NotFound,
	server.EConflict:        codes.AlreadyExists,
	server.EUnauthenticated: codes.Unauthenticated,
	server.EPermission:      codes.PermissionDenied,
	server.ELimit:           codes.ResourceExhausted,
	server.EPrecondition:    codes.FailedPrecondition,
	server.EUnavailable:     codes.Unavailable,
	server.EInternal:        codes.Internal,
}

// internalMessage is all a client learns of an internal error.
const internalMessage = "internal error: the server log has the details; try again, and report it if it persists"

// toStatus turns a service error into a gRPC status error: the code from
// codeTable, the human message, and details a client can act on: always a
// google.rpc.ErrorInfo (domain errorDomain) whose reason is the Error's
// Reason (see server.Reason for the wire form) and whose metadata carries
// the facts a client needs (infoMetadata), plus BadRequest, QuotaFailure
// and RetryInfo where they apply. Internal errors (and anything that is not
// a *server.Error) are logged in full and answered with a generic message.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (from an interceptor)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	var e *server.Error
	if !errors.As(err, &e) {
		e = server.Internal(err, "handling "+method)
	}
	code, ok := codeTable[e.Code]
	if !ok {
		code = codes.Internal
	}
	if code == codes.Internal {
		log.ErrorContext(ctx, "internal error", "method", method, "err", err)
		return withReason(codes.Internal, internalMessage, server.ReasonInternal)
	}
	msg := e.Message
	if e.Code == server.ENotFound && len(e.NearMatches) > 0 {
		msg += "; did you mean " + strings.Join(e.NearMatches, " or ") + "?"
	}
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: string(e.ReasonOf()), Domain: errorDomain, Metadata: infoMetadata(e)}
	ds := []protoadapt.MessageV1{info}
	switch e.Code {
	case server.EInvalid:
		ds = append(ds, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: info.Metadata["field"], Description: e.Message}}})
	case server.ELimit:
		ds = append(ds, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: info.Metadata["limit"], Description: e.Message}}})
	}
	if !e.RetryAfter.IsZero() {
		if d := time.Until(e.RetryAfter); d > 0 {
			ds = append(ds, &errdetails.RetryInfo{RetryDelay: durationpb.New(d.Round(time.Second))})
		}
	}
	if withDetails, derr := st.WithDetails(ds...); derr == nil {
		st = withDetails
	}
	return st.Err()
}

// infoMetadata is the ErrorInfo metadata of e, the keys documented with
// enum ErrorReason (proto/hotline/v1/common.proto):
//
//	field         the request field at fault (always for EInvalid: "request"
//	              when the Error names none)
//	near_matches  similar serials, comma-separated (ENotFound)
//	roles         the roles that may, comma-separated (EPermission)
//	limit         the exhausted limit (always for ELimit: "issuance" when the
//	              Error names none); count, max (decimal) and window (a Go
//	              duration, e.g. "24h0m0s") when the Error carries them
//	retry_at      when trying again may succeed, RFC 3339 UTC, whenever the
//	              Error sets RetryAfter (besides RetryInfo, which is relative
//	              and only sent while the time is ahead)
func infoMetadata(e *server.Error) map[string]string {
	md := map[string]string{}
	if e.Field != "" {
		md["field"] = e.Field
	}
	switch e.Code {
	case server.EInvalid:
		if md["field"] == "" {
			md["field"] = "request"
		}
	case server.ENotFound:
		if len(e.NearMatches) > 0 {
			md["near_matches"] = strings.Join(e.NearMatches, ",")
		}
	case server.EPermission:
		if len(e.Roles) > 0 {
			names := make([]string, len(e.Roles))
			for i, r := range e.Roles {
				names[i] = string(r)
			}
			md["roles"] = strings.Join(names, ",")
		}
	case server.ELimit:
		md["limit"] = cmp.Or(e.Limit, "issuance")
		if e.Count > 0 || e.Max > 0 {
			md["count"] = strconv.Itoa(e.Count)
			md["max"] = strconv.Itoa(e.Max)
		}
		if e.Window > 0 {
			md["window"] = e.Window.String()
		}
	}
	if !e.RetryAfter.IsZero() {
		md["retry_at"] = e.RetryAfter.UTC().Format(time.RFC3339)
	}
	if len(md) == 0 {
		return nil
	}
	return md
}

// withReason is a status with code, msg and an ErrorInfo of reason alone:
// for the answers made outside toStatus (the interceptors', internal
// errors), so that every refusal carries a reason.
func withReason(code codes.Code, msg string, reason server.Reason) error {
	st := status.New(code, msg)
	if withDetails, err := st.WithDetails(&errdetails.ErrorInfo{Reason: string(reason), Domain: errorDomain}); err == nil {
		st = withDetails
	}
	return st.Err()
}
