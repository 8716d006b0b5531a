package server

import (
	"context"
	"time"
)

// AuditSummary is what an auditor asks first about a time range: who
// issued how many temporary passwords each day, which devices got several,
// and what was refused and why. Every count comes from the audit log.
type AuditSummary struct {
	// From (inclusive) and To (exclusive) are the range summarised.
	From, To time.Time
	// PerAgentDay counts successful issuances per actor per UTC day,
	// ordered by day, then actor.
	PerAgentDay []AgentDayCount
	// RepeatedDevices are the devices with at least two successful
	// issuances in the range, most first (then by serial), at most
	// MaxRepeatedDevices of them.
	RepeatedDevices []DeviceCount
	// RepeatedTruncated is true when RepeatedDevices was cut.
	RepeatedTruncated bool
	// Refusals counts refused events by action and reason, most first.
	Refusals []RefusalCount
}

// MaxRepeatedDevices bounds AuditSummary.RepeatedDevices.
const MaxRepeatedDevices = 1000

// AgentDayCount is one actor's successful issuances on one UTC day.
type AgentDayCount struct {
	// Day is midnight UTC of the day.
	Day   time.Time
	Actor string
	// Count is the issuances; Overrides those over a limit (a supervisor's
	// override, detail "override …").
	Count, Overrides int64
}

// DeviceCount is a device's successful issuances in a range.
type DeviceCount struct {
	Serial string
	// Count is the issuances, Actors the distinct staff members who made them.
	Count, Actors int64
	// First and Last are the first and the last issuance's times.
	First, Last time.Time
}

// RefusalCount is how often an action was refused for one reason.
type RefusalCount struct {
	Action Action
	// Reason is the first word of the refused events' Detail: the refusal
	// code the service or the store wrote, e.g. "permission_denied",
	// "invalid:serial", "limit=per-device", "owner_mismatch", "on_hold".
	Reason string
	// Count is the refused events, Actors the distinct staff members.
	Count, Actors int64
}

// AuditCheckpoint is a signed statement of the audit chain's length and
// head (server/audit's Checkpoint), as the API shows it.
type AuditCheckpoint struct {
	// Text is the checkpoint's text form, signature included: what an
	// auditor keeps outside the database and gives back to verify.
	Text string
	// Size is the number of seals covered, Head the chain's head there
	// (lower-case hex).
	Size int64
	Head string
	// Time is when it was signed; KID the audit key that signed it.
	Time time.Time
	KID  string
}

// AuditProblem is one thing a verification found wrong.
type AuditProblem struct {
	// Kind is server/audit's ProblemKind: "changed", "reordered",
	// "removed", "inserted", "checkpoint", "unsigned", "truncated",
	// "rewritten", "stale", "future", "unaudited".
	Kind string
	// Seq is the chain position concerned, EventID the audit event; 0 if none.
	Seq, EventID int64
	// Message is a sentence for the auditor.
	Message string
}

// AuditReport is the outcome of verifying the audit log.
type AuditReport struct {
	// Events in the log, Sealed of them linked into the chain, Unsealed not yet.
	Events, Sealed, Unsealed int64
	// Checkpoints is the number of stored checkpoints that verified.
	Checkpoints int64
	// External is true when an external checkpoint was given and matched.
	External bool
	// Head is the recomputed chain head, lower-case hex.
	Head string
	// Problem is the first problem found; nil when the log verified.
	Problem *AuditProblem
	// Problems is every problem found (Problem first), at most
	// server/audit's MaxProblems; ProblemsTruncated is true when there
	// were more.
	Problems          []AuditProblem
	ProblemsTruncated bool
	// Witnessed is true when the chain continues the last checkpoint
	// published outside the database (the sealer's witness).
	Witnessed bool
	// Elapsed is how long the verification took.
	Elapsed time.Duration
}

// OK reports whether the log verified.
func (r AuditReport) OK() bool { return r.Problem == nil }

// AuditLog verifies the tamper-evident audit log; server/audit's Log
// implements it on PostgreSQL with the keyring's audit public keys.
type AuditLog interface {
	// Verify recomputes the chain and checks every stored checkpoint and,
	// when external is not empty, that checkpoint too (text or JSON form).
	// A log that fails verification is a report with a Problem, not an
	// error; an external checkpoint that does not parse or whose signature
	// does not verify is EInvalid (field "checkpoint").
	Verify(ctx context.Context, external []byte) (AuditReport, error)
	// LatestCheckpoint returns the newest signed checkpoint; ok is false
	// when nothing is sealed yet.
	LatestCheckpoint(ctx context.Context) (c AuditCheckpoint, ok bool, err error)
}
