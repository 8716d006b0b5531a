package grpcserver

import (
	"context"
	"errors"
	"log/slog"
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
// codeTable, the human message, and details a client can act on. Internal
// errors (and anything that is not a *server.Error) are logged in full and
// answered with a generic message.
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
		return status.Error(codes.Internal, internalMessage)
	}
	msg := e.Message
	if e.Code == server.ENotFound && len(e.NearMatches) > 0 {
		msg += "; did you mean " + strings.Join(e.NearMatches, " or ") + "?"
	}
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: strings.ToUpper(string(e.Code)), Domain: errorDomain}
	var ds []protoadapt.MessageV1
	switch e.Code {
	case server.EInvalid:
		field := e.Field
		if field == "" {
			field = "request"
		}
		ds = append(ds, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: e.Message}}})
		info.Metadata = map[string]string{"field": field}
	case server.ENotFound:
		if len(e.NearMatches) > 0 {
			info.Metadata = map[string]string{"near_matches": strings.Join(e.NearMatches, ",")}
		}
	case server.ELimit:
		subject := e.Limit
		if subject == "" {
			subject = "issuance"
		}
		ds = append(ds, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: subject, Description: e.Message}}})
		info.Metadata = map[string]string{"limit": subject}
	case server.EPermission:
		if e.Field != "" {
			info.Metadata = map[string]string{"field": e.Field}
		}
	}
	if !e.RetryAfter.IsZero() {
		if d := time.Until(e.RetryAfter); d > 0 {
			ds = append(ds, &errdetails.RetryInfo{RetryDelay: durationpb.New(d.Round(time.Second))})
		}
	}
	ds = append([]protoadapt.MessageV1{info}, ds...)
	if withDetails, derr := st.WithDetails(ds...); derr == nil {
		st = withDetails
	}
	return st.Err()
}
