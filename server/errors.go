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

// Reason is the specific, machine-readable cause of an Error, sent to
// clients as google.rpc.ErrorInfo.reason (domain "hotline.v1") so that they
// choose what to do without reading the message. The values cross the wire
// and are listed in proto/hotline/v1/common.proto as enum ErrorReason, in
// the same order: ReasonDeviceOnHold is ERROR_REASON_DEVICE_ON_HOLD there.
// On the wire the reason is the enum value's name without the
// "ERROR_REASON_" prefix (UPPER_SNAKE_CASE, as AIP-193 wants), which is
// exactly the Reason's value: "DEVICE_ON_HOLD". Append only, never reuse
// or rename one; a test in server/grpc checks both lists.
type Reason string

// The reasons. An Error without one gets its Code's default (DefaultReason).
const (
	// ReasonInvalidArgument: a request field is malformed (metadata "field").
	ReasonInvalidArgument Reason = "INVALID_ARGUMENT"
	// ReasonDeviceNotFound: no device is registered under the serial or
	// device id (metadata "near_matches").
	ReasonDeviceNotFound Reason = "DEVICE_NOT_FOUND"
	// ReasonNotFound: something else the request named does not exist.
	ReasonNotFound Reason = "NOT_FOUND"
	// ReasonDeviceExists: the serial or device id is already registered.
	ReasonDeviceExists Reason = "DEVICE_EXISTS"
	// ReasonConflict: another conflict with what is stored.
	ReasonConflict Reason = "CONFLICT"
	// ReasonRequestIDReused: the request id was used for another request.
	ReasonRequestIDReused Reason = "REQUEST_ID_REUSED"
	// ReasonUnauthenticated: no valid staff token.
	ReasonUnauthenticated Reason = "UNAUTHENTICATED"
	// ReasonRoleNotAllowed: the caller's role may not perform the act
	// (metadata "roles": the roles that may).
	ReasonRoleNotAllowed Reason = "ROLE_NOT_ALLOWED"
	// ReasonOverrideNotAllowed: only a supervisor may give an override
	// reason (metadata "field").
	ReasonOverrideNotAllowed Reason = "OVERRIDE_NOT_ALLOWED"
	// ReasonLimitPerDevice: the device's issuance limit is reached
	// (metadata "limit", "count", "max", "window", "retry_at").
	ReasonLimitPerDevice Reason = "LIMIT_PER_DEVICE"
	// ReasonLimitPerAgent: the staff member's issuance limit is reached
	// (metadata as ReasonLimitPerDevice).
	ReasonLimitPerAgent Reason = "LIMIT_PER_AGENT"
	// ReasonDeviceOnHold: the device is on hold and gets no code.
	ReasonDeviceOnHold Reason = "DEVICE_ON_HOLD"
	// ReasonSequenceWrap: the device had many codes in this 10-minute slot;
	// retry at metadata "retry_at".
	ReasonSequenceWrap Reason = "SEQUENCE_WRAP"
	// ReasonImportFinished: the import was already finished.
	ReasonImportFinished Reason = "IMPORT_FINISHED"
	// ReasonImportNotYours: the import was begun by another staff member.
	ReasonImportNotYours Reason = "IMPORT_NOT_YOURS"
	// ReasonAuditUnavailable: the audit log cannot answer (not configured,
	// nothing sealed yet).
	ReasonAuditUnavailable Reason = "AUDIT_UNAVAILABLE"
	// ReasonFailedPrecondition: another state refusal.
	ReasonFailedPrecondition Reason = "FAILED_PRECONDITION"
	// ReasonDatabaseBusy: the database was busy or unreachable; retry.
	ReasonDatabaseBusy Reason = "DATABASE_BUSY"
	// ReasonUnavailable: another temporary refusal; retry.
	ReasonUnavailable Reason = "UNAVAILABLE"
	// ReasonInternal: a bug or an outage; the server log has the details.
	ReasonInternal Reason = "INTERNAL"
	// ReasonGuessesPerDevice: too many wrong owner checks or code entries
	// on the device; guesses are refused unjudged (metadata "limit").
	ReasonGuessesPerDevice Reason = "OWNER_GUESSES_PER_DEVICE"
	// ReasonGuessesPerAgent: too many wrong owner checks or code entries
	// by the staff member.
	ReasonGuessesPerAgent Reason = "OWNER_GUESSES_PER_AGENT"
	// ReasonSupervisorRequired: the device had wrong owner guesses since
	// its last issuance; only a supervisor may issue its next code.
	ReasonSupervisorRequired Reason = "SUPERVISOR_REQUIRED"
	// ReasonNoEmailRegistered: the device has no registered e-mail address.
	ReasonNoEmailRegistered Reason = "NO_EMAIL_REGISTERED"
	// ReasonSendsPerDevice: enough codes were mailed to the device's owner.
	ReasonSendsPerDevice Reason = "CODES_PER_DEVICE"
	// ReasonSendsPerAgent: the staff member mailed enough codes.
	ReasonSendsPerAgent Reason = "CODES_PER_AGENT"
	// ReasonNoOwnerCode: no code is waiting for an entry (none sent,
	// expired, verified, or spent by wrong entries).
	ReasonNoOwnerCode Reason = "NO_OWNER_CODE"
	// ReasonOwnerCodeMismatch: the entered code is not the one sent.
	ReasonOwnerCodeMismatch Reason = "OWNER_CODE_MISMATCH"
	// ReasonOwnerCodeNotVerified: an issuance claims the owner-email-code
	// method without a verified, unspent code by the same agent.
	ReasonOwnerCodeNotVerified Reason = "OWNER_CODE_NOT_VERIFIED"
	// ReasonContactRecentlyChanged: the device's owner contact changed
	// recently, so only a supervisor giving an override reason may issue
	// (metadata "retry_at": when an agent may again).
	ReasonContactRecentlyChanged Reason = "CONTACT_RECENTLY_CHANGED"
	// ReasonDeviceCap: the device's absolute issuance cap is reached; no
	// override passes it (metadata as ReasonLimitPerDevice).
	ReasonDeviceCap Reason = "DEVICE_CAP"
	// ReasonIssuanceExpired: a retry of an issuance that has expired since;
	// issue a new one with a new request id.
	ReasonIssuanceExpired Reason = "ISSUANCE_EXPIRED"
	// ReasonStreamTimeout: a stream ran past the server's deadline, or its
	// client stopped reading; retrying the same request times out again:
	// narrow it (a shorter time range, fewer rows) or read as it comes.
	ReasonStreamTimeout Reason = "STREAM_TIMEOUT"
)

// defaultReasons is the Reason of an Error that sets none.
var defaultReasons = map[Code]Reason{
	EInvalid:         ReasonInvalidArgument,
	ENotFound:        ReasonNotFound,
	EConflict:        ReasonConflict,
	EUnauthenticated: ReasonUnauthenticated,
	EPermission:      ReasonRoleNotAllowed,
	ELimit:           ReasonLimitPerDevice,
	EPrecondition:    ReasonFailedPrecondition,
	EUnavailable:     ReasonUnavailable,
	EInternal:        ReasonInternal,
}

// ReasonOf returns e's Reason, or its Code's default when it sets none.
func (e *Error) ReasonOf() Reason {
	if e.Reason != "" {
		return e.Reason
	}
	if r, ok := defaultReasons[e.Code]; ok {
		return r
	}
	return ReasonInternal
}

// Error is the one error type of the service. Adapters wrap their own errors
// into it; the transport maps Code to a status and shows Message.
type Error struct {
	// Code classifies the error.
	Code Code
	// Reason is the specific cause a client acts on; empty means the
	// Code's default (ReasonOf).
	Reason Reason
	// Message is a human sentence that says what was wrong and what was
	// expected, safe to show to staff.
	Message string
	// Field names the request field at fault (EInvalid).
	Field string
	// NearMatches lists similar serials (ENotFound on a lookup).
	NearMatches []string
	// Roles lists the roles that may perform the act (EPermission,
	// ReasonRoleNotAllowed).
	Roles []Role
	// Limit names the exhausted limit (ELimit), e.g. "per-device".
	Limit string
	// Count and Max are the limit's use and its maximum, and Window the
	// period it counts over (ELimit); zero when not known.
	Count, Max int
	Window     time.Duration
	// RetryAfter is when trying again may succeed (ELimit, EUnavailable,
	// an audit log with nothing sealed yet).
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
