package server

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies an Error. The gRPC transport maps each code to one status
// code in one table (server/grpc); the values are stable: append only.
type Code string

// The error codes.
const (
	// EInvalid: the request is malformed; Field names what was wrong.
	EInvalid Code = "invalid"
	// ENotFound: no such device (or issuance); NearMatches may help.
	ENotFound Code = "not_found"
	// EConflict: the thing already exists differently.
	EConflict Code = "conflict"
	// EUnauthenticated: no valid staff token.
	EUnauthenticated Code = "unauthenticated"
	// EPermission: the role may not do this.
	EPermission Code = "permission_denied"
	// ELimit: a per-device or per-agent limit is reached.
	ELimit Code = "limit"
	// EPrecondition: the device is on hold, or similar state refusal.
	EPrecondition Code = "failed_precondition"
	// EUnavailable: try again shortly (e.g. sequence wrap within one slot).
	EUnavailable Code = "unavailable"
	// EInternal: a bug or an outage; the message is logged, not shown.
	EInternal Code = "internal"
)

// Error is the one error type of the service. Adapters wrap their own errors
// into it; the transport maps Code to a status and shows Message.
type Error struct {
	// Code classifies the error.
	Code Code
	// Message is a human sentence that says what was wrong and what was
	// expected, safe to show to staff.
	Message string
	// Field names the request field at fault (EInvalid).
	Field string
	// NearMatches lists similar serials (ENotFound on a lookup).
	NearMatches []string
	// Limit names the exhausted limit (ELimit), e.g. "per-device".
	Limit string
	// RetryAfter is when trying again may succeed (ELimit, EUnavailable).
	RetryAfter time.Time
	// Err is the underlying cause, logged but never shown.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EInvalid error naming the field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: EInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Internal wraps an unexpected error; its text is logged, not shown.
func Internal(err error, what string) *Error {
	return &Error{Code: EInternal, Message: "internal error while " + what, Err: err}
}

// ErrorCode returns the code of err, EInternal when err is not an *Error.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}
