// Package server holds the central service's domain: the types a support
// agent, a supervisor, an auditor and a provisioner work with, the policy
// that decides who may issue a temporary password, and the contracts
// (interfaces) that the adapters implement.
//
// It imports only the standard library and the shared credential packages
// under agent/. The PostgreSQL adapter lives in server/postgres, the gRPC
// transport in server/grpc, the key material in server/keyring.
package server

import (
	"context"
	"strings"
	"time"
)

// Role is a staff member's role, carried in the staff token's "role" claim.
// The values cross the wire: append only.
type Role string

// The staff roles.
const (
	// RoleAgent looks devices up, checks owners and issues codes within limits.
	RoleAgent Role = "agent"
	// RoleSupervisor may do what an agent does, also over a limit (with a
	// reason), and puts devices on hold or releases them.
	RoleSupervisor Role = "supervisor"
	// RoleAuditor reads the audit log, nothing else.
	RoleAuditor Role = "auditor"
	// RoleProvisioner maintains the device registry.
	RoleProvisioner Role = "provisioner"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAgent, RoleSupervisor, RoleAuditor, RoleProvisioner:
		return true
	}
	return false
}

// Actor is the authenticated staff member behind a request.
type Actor struct {
	// Subject is the staff token's "sub" claim (a person's login).
	Subject string
	// Role is the staff token's "role" claim.
	Role Role
	// ClientAddr is the peer address the request came from, for the audit log.
	ClientAddr string
}

// Model is an entry of the model catalogue (seeded by the migrations).
type Model struct {
	// Code is the model number printed on the label, e.g. "WBXHD082S2T".
	Code string
	// Channels is the number of camera channels (4, 8 or 16).
	Channels int
	// Drives is the number of drive bays.
	Drives int
	// ShipsWithDrive is true for the "T" variants that ship with a drive.
	ShipsWithDrive bool
	// Description is a human line for the support agent's screen.
	Description string
}

// Hold is why a device gets no temporary password (reported stolen,
// disputed ownership).
type Hold struct {
	// Reason is the supervisor's free text.
	Reason string
	// By is the supervisor who placed the hold.
	By string
	// Since is when the hold was placed.
	Since time.Time
}

// Device is a DVR in the registry.
type Device struct {
	// Serial is the canonical serial (agent/serial's String form).
	Serial string
	// DeviceID is the serial's last field, e.g. "DVR1101134C08011".
	DeviceID string
	// Model is a Model.Code.
	Model string
	// ProductionDate is the serial's date field.
	ProductionDate time.Time
	// Firmware is the firmware version last reported by the factory.
	Firmware string
	// OwnerContact is the registered owner's e-mail or phone. Never shown
	// unmasked to staff: see MaskContact.
	OwnerContact string
	// KeyGeneration is the master-key generation the device key was derived
	// under at the factory.
	KeyGeneration int
	// Hold is non-nil while the device is on hold.
	Hold *Hold
	// RegisteredAt is when the device entered the registry.
	RegisteredAt time.Time
	// ImportID and ImportLine name the bulk import, and the line of its
	// file, that registered the device or last overwrote it
	// (ImportOptions.Update): "" and 0 for a device registered one by one.
	// Filled by lookups; a device given to the store leaves them unset.
	ImportID   string
	ImportLine int
	// RecentIssuances counts the device's issuances in the last 24 hours
	// (filled by lookups, for the agent to see before promising a code).
	RecentIssuances int
}

// VerificationMethod is how the support agent checked that the caller owns
// the device. The values cross the wire and are stored: append only.
type VerificationMethod int

// The verification methods.
const (
	// VerifyUnspecified is the zero value and is refused.
	VerifyUnspecified VerificationMethod = 0
	// VerifyOwnerContact means the caller gave the registered owner contact
	// and the owner check matched.
	VerifyOwnerContact VerificationMethod = 1
	// VerifyProofOfPurchase means the caller sent an invoice or receipt.
	VerifyProofOfPurchase VerificationMethod = 2
	// VerifyInstallerAccount means a registered installer called from their account.
	VerifyInstallerAccount VerificationMethod = 3
	// VerifyOther needs a note saying what was checked.
	VerifyOther VerificationMethod = 4
	// VerifyOwnerEmailCode means the caller read back a code sent to the
	// registered e-mail address and it matched (Service.VerifyOwnerCode):
	// the strongest proof, valid for one issuance by the same agent.
	VerifyOwnerEmailCode VerificationMethod = 5
)

// IssueRequest is a support agent's request for a temporary password.
type IssueRequest struct {
	// RequestID is chosen by the client (a UUID); a retry with the same ID
	// returns the same issuance.
	RequestID string
	// Serial is the canonical serial.
	Serial string
	// Ticket is the support ticket reference.
	Ticket string
	// Method is how the caller's ownership was checked.
	Method VerificationMethod
	// MethodNote is free text; required with VerifyOther.
	MethodNote string
	// OverrideReason is a supervisor's reason for issuing over a limit.
	OverrideReason string
	// RequestCode, when set, is the request code of a DVR whose clock is
	// not set: the voice code is bound to it. Canonical after checkIssue.
	RequestCode string
	// Delivery is how the code reaches the caller (voice by default).
	Delivery Delivery
}

// Limits are the issuance limits; over either, only a supervisor with a
// reason may issue.
type Limits struct {
	// PerDevice is how many issuances one device may get per PerDeviceWindow.
	PerDevice int
	// PerDeviceWindow defaults to 24 hours.
	PerDeviceWindow time.Duration
	// PerAgent is how many issuances one staff member may make per PerAgentWindow.
	PerAgent int
	// PerAgentWindow defaults to one hour.
	PerAgentWindow time.Duration
	// DeviceCap is how many issuances one device may get per
	// PerDeviceWindow at all: not even a supervisor's override passes it.
	// Never below PerDevice.
	DeviceCap int
	// ContactHold is how long after a change of a device's owner contact
	// only a supervisor (with an override reason) may issue for it.
	ContactHold time.Duration
}

// DefaultLimits are the issuance limits a support centre starts with: three
// codes per device per day, thirty per staff member per hour, never more
// than ten per device per day, and a supervisor for three days after an
// owner contact changed.
var DefaultLimits = Limits{PerDevice: 3, PerDeviceWindow: 24 * time.Hour, PerAgent: 30, PerAgentWindow: time.Hour,
	DeviceCap: 10, ContactHold: 72 * time.Hour}

// WithDefaults returns l with its zero (or negative) fields taken from
// DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.PerDevice <= 0 {
		l.PerDevice = d.PerDevice
	}
	if l.PerDeviceWindow <= 0 {
		l.PerDeviceWindow = d.PerDeviceWindow
	}
	if l.PerAgent <= 0 {
		l.PerAgent = d.PerAgent
	}
	if l.PerAgentWindow <= 0 {
		l.PerAgentWindow = d.PerAgentWindow
	}
	if l.DeviceCap <= 0 {
		l.DeviceCap = d.DeviceCap
	}
	l.DeviceCap = max(l.DeviceCap, l.PerDevice)
	if l.ContactHold <= 0 {
		l.ContactHold = d.ContactHold
	}
	return l
}

// LimitScope names one of the issuance limits. The values are stored in
// audit details and sent to clients: append only.
type LimitScope string

// The limit scopes.
const (
	// LimitPerDevice counts a device's issuances in Limits.PerDeviceWindow.
	LimitPerDevice LimitScope = "per-device"
	// LimitPerAgent counts a staff member's issuances in Limits.PerAgentWindow.
	LimitPerAgent LimitScope = "per-agent"
)

// IssueFacts is an issue request and what the store read for it, under
// the actor's and the device's locks, for DecideIssue.
type IssueFacts struct {
	// Actor, Request (validated, its Serial canonical) and Limits (with
	// defaults) are the request being decided, as the store was given them.
	Actor   Actor
	Request IssueRequest
	Limits  Limits
	// Now is the issue time: the database clock, never earlier than the
	// device's previous issue time (issue times follow sequence numbers).
	Now time.Time
	// Existing is the actor's earlier issuance with the same request id,
	// nil when the request id is new.
	Existing *Issuance
	// Registered is false when no device has the request's serial; the
	// device fields below are then zero.
	Registered bool
	// Hold is the device's hold, nil when it is not on hold.
	Hold *Hold
	// LastSequence is the device's last sequence number (0: none yet).
	LastSequence int64
	// LastIssuedAt is the device's last issue time (zero: none yet).
	LastIssuedAt time.Time
	// KeyGeneration is the master-key generation of the device's key.
	KeyGeneration int
	// DeviceCount and AgentCount are the device's and the actor's
	// issuances within the limits' windows before Now.
	DeviceCount, AgentCount int
	// OwnerChecked is whether an owner check of this device by this actor
	// succeeded within the hour before Now.
	OwnerChecked bool
	// OwnerMisses counts the device's owner-guess misses since its last
	// issuance, within MissWindow.
	OwnerMisses int
	// OwnerCodeID is this actor's newest verified, unspent owner code for
	// the device, "" when there is none; OwnerCodeVerifiedAt when it was
	// verified (it is spendable within VerifyLimits.CodeValidity).
	OwnerCodeID         string
	OwnerCodeVerifiedAt time.Time
	// OwnerContact is the device's registered owner contact (for e-mail
	// delivery); never shown.
	OwnerContact string
	// ContactChangedAt is when the device's owner contact last changed
	// after registration (ActionContactChange); zero when it never did.
	ContactChangedAt time.Time
	// InWindow returns the issue time of the scope's in-window issuance at
	// offset n (0 the oldest), for telling when a limit frees up. Read on
	// demand, inside the same transaction.
	InWindow func(scope LimitScope, n int) (time.Time, error)
}

// IssueDecision is what DecideIssue decided about an issue request, for the
// store to write in the transaction that read the facts.
type IssueDecision struct {
	// Event is the audit event to write, in every case.
	Event AuditEvent
	// Refusal, when set, is the answer: only Event is written.
	Refusal *Error
	// Replay, when set, hands IssueFacts.Existing out again: only Event is
	// written.
	Replay bool
	// Issuance is the new issuance to write (neither Refusal nor Replay):
	// its Sequence is IssueFacts.LastSequence+1 and its IssuedAt
	// IssueFacts.Now.
	Issuance Issuance
	// SpendOwnerCode, with Issuance, is the owner code the issuance
	// spends (marked used by it).
	SpendOwnerCode string
	// Mail, with Issuance, is the outbox message that delivers it.
	Mail *OutboxMessage
}

// Issuance is one temporary password as stored: the fields it was made
// from, never the code itself. The voice code and the grant are re-derived
// from it (both are deterministic), which is what makes retries idempotent.
type Issuance struct {
	// ID is the issuance's UUID; it is the grant's "jti".
	ID string
	// RequestID is the client's idempotency key.
	RequestID string
	// Serial is the canonical serial.
	Serial string
	// Sequence is the per-device sequence number, assigned by the database.
	Sequence int64
	// KeyGeneration is the master-key generation of the voice code.
	KeyGeneration int
	// SigningKeyID is the "kid" of the grant's signing key.
	SigningKeyID string
	// IssuedAt is the issue time (the voice code carries it at 10-minute
	// resolution, floored).
	IssuedAt time.Time
	// ExpiresAt is when the code and the grant stop being accepted.
	ExpiresAt time.Time
	// Actor and ActorRole are who issued it.
	Actor     string
	ActorRole Role
	// Ticket, Method, MethodNote and OverrideReason are as requested.
	Ticket         string
	Method         VerificationMethod
	MethodNote     string
	OverrideReason string
	// RequestCode is the request code the voice code is bound to, or "".
	RequestCode string
	// MAC is the service's proof that it made this issuance (Keyring's
	// IssuanceMAC over IssuanceMACMessage): no code is derived from an
	// issuance whose MAC does not verify. All zero when there is none.
	MAC [IssuanceMACSize]byte
}

// Outcome is an audit event's result. Stored: append only.
type Outcome string

// The audit outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeRefused Outcome = "refused"
)

// Action names an audited act. Stored: append only.
type Action string

// The audited actions.
const (
	ActionLookup     Action = "device.lookup"
	ActionOwnerCheck Action = "device.owner_check"
	ActionRegister   Action = "device.register"
	ActionImport     Action = "device.import"
	// ActionImportBatch is one committed batch of an import, audited in the
	// batch's transaction; ActionImport is the import's one summary event.
	ActionImportBatch Action = "device.import_batch"
	// ActionImportUpdate is one registered device overwritten by an import
	// run with --update.
	ActionImportUpdate Action = "device.import_update"
	// ActionContactChange is a registered device's owner contact replaced
	// by another (its detail has both, masked); issuing for the device
	// then needs a supervisor for Limits.ContactHold.
	ActionContactChange Action = "device.contact_change"
	ActionHold          Action = "device.hold"
	ActionRelease       Action = "device.release"
	ActionIssue         Action = "recovery.issue"
	// ActionIssueReplay is an idempotent retry handed the first answer again.
	ActionIssueReplay Action = "recovery.issue_replay"
	// ActionIssueAlert is an alert-worthy issuance or refusal (a burst
	// over the per-device limit, the absolute cap reached), recorded
	// besides the act's own event so that auditors filter on it.
	ActionIssueAlert      Action = "recovery.alert"
	ActionListIssuances   Action = "recovery.list"
	ActionAuditQuery      Action = "audit.query"
	ActionAuditExport     Action = "audit.export"
	ActionAuditSummary    Action = "audit.summary"
	ActionAuditCheckpoint Action = "audit.checkpoint"
	ActionAuditVerify     Action = "audit.verify"
	ActionKeysDeviceKeys  Action = "keys.device_keys"
	// ActionOwnerCodeSend queues a one-time code to the registered e-mail.
	ActionOwnerCodeSend Action = "device.owner_code_send"
	// ActionOwnerCodeCheck is an entry of that code.
	ActionOwnerCodeCheck Action = "device.owner_code_check"
	// ActionMailAttempt is one SMTP attempt of an outbox message (the
	// reply and the Message-ID in Detail), or its reaping.
	ActionMailAttempt Action = "mail.attempt"
	// ActionMailStatus is a staff member reading delivery states.
	ActionMailStatus Action = "mail.status"
	// ActionApprovalRequest is a staff member asking a supervisor to issue
	// a code the policy refused them; ActionApprovalGrant and
	// ActionApprovalDeny a supervisor's answer, ActionApprovalExpire a
	// request left unanswered for ApprovalTTL, ActionApprovalReveal the
	// granted code shown to the requester.
	ActionApprovalRequest Action = "recovery.approval_request"
	ActionApprovalGrant   Action = "recovery.approval_grant"
	ActionApprovalDeny    Action = "recovery.approval_deny"
	ActionApprovalExpire  Action = "recovery.approval_expire"
	ActionApprovalReveal  Action = "recovery.approval_reveal"
)

// AuditEvent is one entry of the append-only audit log.
type AuditEvent struct {
	// ID is assigned by the database in commit-independent insert order.
	ID int64
	// Time is when the act happened (database clock).
	Time time.Time
	// Actor, Role and ClientAddr say who did it and from where.
	Actor      string
	Role       Role
	ClientAddr string
	// Action is what was done; Outcome whether it happened.
	Action  Action
	Outcome Outcome
	// Serial is the device concerned, if any.
	Serial string
	// Ticket, Method and Reason are as the request gave them.
	Ticket string
	Method VerificationMethod
	Reason string
	// RequestID is the client's request id, if any.
	RequestID string
	// IssuanceID links an issuance event to its issuance.
	IssuanceID string
	// Detail is a short machine-readable note (refusal code, counts).
	Detail string
}

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	Serial  string
	Actor   string
	Action  Action
	Outcome Outcome
	// From is inclusive, To exclusive; zero means unbounded.
	From, To time.Time
	// Limit is the page size: Service.QueryAudit takes 0 as
	// DefaultAuditPage and clamps it to MaxAuditPage; a Store returns at
	// most Limit events.
	Limit int
	// After is the keyset cursor: events strictly older than this one
	// (newest first ordering on (time, id)).
	AfterTime time.Time
	AfterID   int64
	// HideAuditorReads leaves out the auditors' own reads of the audit
	// log (AuditEvent.AuditorRead): set by the service for every reader
	// but an auditor, so that a supervisor never sees who investigates
	// whom.
	HideAuditorReads bool
}

// AuditorRead reports whether e is an auditor's act on the audit log (a
// query, an export, a verification, or its refusal).
func (e AuditEvent) AuditorRead() bool {
	return e.Role == RoleAuditor && strings.HasPrefix(string(e.Action), "audit.")
}

// Store is the persistence the service needs. server/postgres implements it
// on PostgreSQL; every method that performs an act writes its audit event in
// the same transaction, so an act is never committed without its event.
type Store interface {
	// Models lists the model catalogue.
	Models(ctx context.Context) ([]Model, error)
	// RegisterDevice adds one device (ActionRegister event).
	RegisterDevice(ctx context.Context, a Actor, d Device) error
	// Device returns the device with that canonical serial, writing an
	// ActionLookup event; unknown serials are NotFound with near matches.
	LookupDevice(ctx context.Context, a Actor, serial string) (Device, error)
	// LookupDeviceID finds the device by its device id alone.
	LookupDeviceID(ctx context.Context, a Actor, deviceID string) (Device, error)
	// NearMatches returns up to n serials similar to the query.
	NearMatches(ctx context.Context, query string, n int) ([]string, error)
	// CheckOwner reads the device's registered owner contact, asks judge
	// about it and records the verdict (ActionOwnerCheck, refused with the
	// verdict's detail on a mismatch) in the same transaction. It returns
	// the verdict's Match; an unknown serial is ENotFound, audited.
	// The store serialises one device's and one actor's guesses (owner
	// checks and code entries) and counts their misses for judge; a
	// verdict's Refusal is recorded and returned.
	CheckOwner(ctx context.Context, a Actor, serial string, judge func(OwnerCheckFacts) OwnerVerdict) (bool, error)
	// SendOwnerCode reads the OwnerCodeSendFacts under the device's and
	// the actor's locks, asks decide, and writes its event and, unless
	// refused, the owner code and its outbox message in one transaction.
	SendOwnerCode(ctx context.Context, a Actor, serial string, decide func(OwnerCodeSendFacts) OwnerCodeSendDecision) (OwnerCode, MailStatus, error)
	// CheckOwnerCode reads the OwnerCodeCheckFacts under the device's and
	// the actor's locks, asks judge, and writes its event and the code's
	// verification or wrong entry in one transaction; it returns the
	// verdict's Refusal (nil on a match).
	CheckOwnerCode(ctx context.Context, a Actor, serial string, judge func(OwnerCodeCheckFacts) (OwnerCodeVerdict, error)) error
	// MailStatuses lists up to limit of a device's outbox messages, newest
	// first (ActionMailStatus).
	MailStatuses(ctx context.Context, a Actor, serial string, limit int) ([]MailStatus, error)
	// IssuanceMail returns the outbox message delivering an issuance, ok
	// false when it was not mailed.
	IssuanceMail(ctx context.Context, issuanceID string) (m MailStatus, ok bool, err error)
	// ClaimMail claims up to n due queued messages for claimer (SKIP
	// LOCKED: concurrent claimers get disjoint rows), marks them sending
	// and commits before returning them.
	ClaimMail(ctx context.Context, claimer string, n int) ([]ClaimedMail, error)
	// FinishMail records the attempts' outcomes (outs[i] of msgs[i],
	// claimed by outs[i].Claimer) and their ActionMailAttempt events, in
	// one transaction.
	FinishMail(ctx context.Context, msgs []OutboxMessage, outs []MailOutcome) error
	// ReapMail fails every claim older than stale (its sender stopped):
	// delivery unknown, never retried. Audited per message.
	ReapMail(ctx context.Context, stale time.Duration) (int, error)
	// SetHold places (h non-nil) or releases (h nil) a hold (audited);
	// releaseReason is the supervisor's reason for a release.
	SetHold(ctx context.Context, a Actor, serial string, h *Hold, releaseReason string) error
	// Issue runs the issuance transaction of req (its Serial canonical) by
	// a: it serialises the actor's and the device's issuances, reads the
	// IssueFacts (counting in lim's windows), calls decide, and writes what
	// decide chose: the event alone (a refusal or a replay), or the
	// device's next sequence, the issuance and its event. It returns the
	// refusal, the replayed issuance or the new one. An error from decide
	// rolls everything back.
	Issue(ctx context.Context, a Actor, req IssueRequest, lim Limits, decide func(IssueFacts) (IssueDecision, error)) (Issuance, error)
	// Issuances lists up to limit of a device's issuances, newest first,
	// those with a sequence below before when it is not 0 (audited).
	Issuances(ctx context.Context, a Actor, serial string, before int64, limit int) ([]Issuance, error)
	// Audit records a standalone event (refusals whose act failed).
	Audit(ctx context.Context, e AuditEvent) error
	// QueryAudit returns events matching f, newest first.
	QueryAudit(ctx context.Context, a Actor, f AuditFilter) ([]AuditEvent, error)
	// ExportAudit calls fn with every event matching f (Limit and the
	// keyset cursor ignored), oldest first by (time, id), as they are read
	// from the database; it stops at fn's first error and returns it. The
	// export is recorded (ActionAuditExport) and committed before the
	// first event is read.
	ExportAudit(ctx context.Context, a Actor, f AuditFilter, fn func(AuditEvent) error) error
	// SummarizeAudit counts the events of [from, to) (ActionAuditSummary,
	// in the same transaction).
	SummarizeAudit(ctx context.Context, a Actor, from, to time.Time) (AuditSummary, error)
}
