package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/serial"
)

// The audit log's readers: auditors and supervisors (see permissions).
// Every read is itself an audit event; a read whose event could not be
// committed is answered with an error, never with the data. Auditors'
// own reads, with their filters, are for auditors only: a supervisor who
// reads the log never learns who is looking into them.

// Bounds of the audit reads.
const (
	// DefaultSummaryRange is SummarizeAudit's range when no start is given.
	DefaultSummaryRange = 7 * 24 * time.Hour
	// MaxSummaryRange bounds SummarizeAudit's range.
	MaxSummaryRange = 366 * 24 * time.Hour
	// MaxCheckpointText bounds the external checkpoint VerifyAudit reads
	// (a checkpoint is about 300 bytes).
	MaxCheckpointText = 4096
)

// auditSealRetry is when a client asking for a checkpoint before the
// first seal is told to try again: a few runs of the sealer (every second
// by default, hotline-server serve --seal-every).
const auditSealRetry = 5 * time.Second

// errNoAuditLog is the answer of the verification reads on a service
// built without an AuditLog.
var errNoAuditLog = &Error{Code: EPrecondition, Reason: ReasonAuditUnavailable,
	Message: "audit log verification not configured on this server: it was started without the audit key set (server/audit.Log)"}

// QueryAudit returns one page of the audit events matching f, newest first
// (roles auditor, supervisor), and whether more events follow the last
// one. f.Serial is canonicalised; f.Limit 0 means DefaultAuditPage, more
// than MaxAuditPage is clamped to it. The store records the query in the
// same transaction.
func (s *Service) QueryAudit(ctx context.Context, a Actor, f AuditFilter) (events []AuditEvent, more bool, err error) {
	ev := AuditEvent{Action: ActionAuditQuery}
	if err := s.allow(ctx, a, ev); err != nil {
		return nil, false, err
	}
	if e := s.checkFilter(&f); e != nil {
		return nil, false, s.refuse(ctx, a, ev, e)
	}
	f.HideAuditorReads = a.Role != RoleAuditor
	size := f.Limit
	f.Limit++ // one more than the page tells whether a next page exists
	events, err = s.Store.QueryAudit(ctx, a, f)
	if err != nil {
		return nil, false, err
	}
	if len(events) > size {
		return events[:size], true, nil
	}
	return events, false, nil
}

// ExportAudit calls fn with every event matching f, oldest first, as the
// store reads them (roles auditor, supervisor). f.Limit and the keyset
// cursor are ignored. The export is recorded before the first event is
// read, so an export cut short is on record too.
func (s *Service) ExportAudit(ctx context.Context, a Actor, f AuditFilter, fn func(AuditEvent) error) error {
	ev := AuditEvent{Action: ActionAuditExport}
	if err := s.allow(ctx, a, ev); err != nil {
		return err
	}
	f.Limit, f.AfterTime, f.AfterID = 0, time.Time{}, 0
	if e := s.checkFilter(&f); e != nil {
		return s.refuse(ctx, a, ev, e)
	}
	f.Limit = 0
	f.HideAuditorReads = a.Role != RoleAuditor
	if !s.beginExport(a.Subject) {
		return s.refuse(ctx, a, ev, &Error{Code: EUnavailable, RetryAfter: s.now().Add(auditSealRetry).UTC(),
			Message: fmt.Sprintf("you already have %d audit export(s) running, the most one staff member may: finish or cancel it first", MaxExportsPerActor)})
	}
	defer s.endExport(a.Subject)
	return s.Store.ExportAudit(ctx, a, f, fn)
}

// MaxExportsPerActor is how many audit exports one staff member may have
// streaming at once. The store bounds them all (postgres.ExportConns).
const MaxExportsPerActor = 1

// beginExport counts an export by subject in, unless it already has
// MaxExportsPerActor running.
func (s *Service) beginExport(subject string) bool {
	s.exportsMu.Lock()
	defer s.exportsMu.Unlock()
	if s.exports == nil {
		s.exports = map[string]int{}
	}
	if s.exports[subject] >= MaxExportsPerActor {
		return false
	}
	s.exports[subject]++
	return true
}

// endExport counts an export by subject out.
func (s *Service) endExport(subject string) {
	s.exportsMu.Lock()
	defer s.exportsMu.Unlock()
	if s.exports[subject]--; s.exports[subject] <= 0 {
		delete(s.exports, subject)
	}
}

func (s *Service) checkFilter(f *AuditFilter) *Error {
	if f.Serial != "" {
		c, err := serial.Canonical(f.Serial)
		if err != nil {
			return parseError("serial", err)
		}
		f.Serial = c
	}
	if len(f.Actor) > 128 || !OneLine(f.Actor) {
		return Invalid("actor", "actor: expected a login name of at most 128 characters, one line of text")
	}
	if f.Action != "" && !actionRE.MatchString(string(f.Action)) {
		return Invalid("action", "action %q: expected a name like %s or %s", f.Action, ActionIssue, ActionLookup)
	}
	switch f.Outcome {
	case "", OutcomeSuccess, OutcomeRefused:
	default:
		return Invalid("outcome", "outcome %q: expected success or refused", f.Outcome)
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return Invalid("end_time", "end_time must be after start_time")
	}
	var e *Error
	f.Limit, e = pageSizeOf(f.Limit, DefaultAuditPage, MaxAuditPage)
	return e
}

// SummarizeAudit summarises the audit events of [from, to) (roles
// auditor, supervisor). A zero to is now; a zero from is
// DefaultSummaryRange before to. The range is at most MaxSummaryRange.
func (s *Service) SummarizeAudit(ctx context.Context, a Actor, from, to time.Time) (AuditSummary, error) {
	ev := AuditEvent{Action: ActionAuditSummary}
	if err := s.allow(ctx, a, ev); err != nil {
		return AuditSummary{}, err
	}
	if to.IsZero() {
		to = s.now()
	}
	if from.IsZero() {
		from = to.Add(-DefaultSummaryRange)
	}
	from, to = from.UTC(), to.UTC()
	switch {
	case !from.Before(to):
		return AuditSummary{}, s.refuse(ctx, a, ev, Invalid("end_time", "end_time must be after start_time"))
	case to.Sub(from) > MaxSummaryRange:
		return AuditSummary{}, s.refuse(ctx, a, ev, Invalid("start_time", "the range is %s: expected at most %d days; summarise it in parts",
			to.Sub(from).Round(time.Hour), MaxSummaryRange/(24*time.Hour)))
	}
	return s.Store.SummarizeAudit(ctx, a, from, to)
}

// AuditCheckpoint returns the newest signed checkpoint of the audit chain
// (roles auditor, supervisor), for the auditor to keep outside the
// database. EPrecondition (ReasonAuditUnavailable) when no AuditLog is
// set, or nothing is sealed yet (then with RetryAfter).
func (s *Service) AuditCheckpoint(ctx context.Context, a Actor) (AuditCheckpoint, error) {
	ev := AuditEvent{Action: ActionAuditCheckpoint}
	if err := s.allow(ctx, a, ev); err != nil {
		return AuditCheckpoint{}, err
	}
	if s.AuditLog == nil {
		return AuditCheckpoint{}, s.refuse(ctx, a, ev, errNoAuditLog)
	}
	c, ok, err := s.AuditLog.LatestCheckpoint(ctx)
	if err != nil {
		return AuditCheckpoint{}, asServerError(err, "reading the latest audit checkpoint")
	}
	if !ok {
		return AuditCheckpoint{}, s.refuse(ctx, a, ev, &Error{Code: EPrecondition, Reason: ReasonAuditUnavailable,
			RetryAfter: s.now().Add(auditSealRetry),
			Message:    "no audit checkpoint yet: the sealer has not sealed any event (it runs every few seconds in every server); try again shortly"})
	}
	ev.Detail = fmt.Sprintf("size=%d kid=%s", c.Size, c.KID)
	if err := s.record(ctx, a, ev); err != nil {
		return AuditCheckpoint{}, err
	}
	return c, nil
}

// VerifyAudit verifies the audit log (roles auditor, supervisor), against
// the external checkpoint too when it is not empty. A log that fails
// verification is a report with a Problem; the verification is recorded
// with its result either way.
func (s *Service) VerifyAudit(ctx context.Context, a Actor, external []byte) (AuditReport, error) {
	ev := AuditEvent{Action: ActionAuditVerify}
	if err := s.allow(ctx, a, ev); err != nil {
		return AuditReport{}, err
	}
	if s.AuditLog == nil {
		return AuditReport{}, s.refuse(ctx, a, ev, errNoAuditLog)
	}
	if len(external) > MaxCheckpointText {
		return AuditReport{}, s.refuse(ctx, a, ev, Invalid("checkpoint", "checkpoint: expected at most %d bytes (one checkpoint from GetCheckpoint)", MaxCheckpointText))
	}
	r, err := s.AuditLog.Verify(ctx, external)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Code == EInvalid {
			return AuditReport{}, s.refuse(ctx, a, ev, e)
		}
		return AuditReport{}, asServerError(err, "verifying the audit log")
	}
	d := []string{"ok=" + strconv.FormatBool(r.OK()), "events=" + strconv.FormatInt(r.Events, 10),
		"sealed=" + strconv.FormatInt(r.Sealed, 10), "checkpoints=" + strconv.FormatInt(r.Checkpoints, 10)}
	if len(external) > 0 {
		d = append(d, "external="+strconv.FormatBool(r.External))
	}
	if p := r.Problem; p != nil {
		d = append(d, "problem="+p.Kind, "seq="+strconv.FormatInt(p.Seq, 10), "event="+strconv.FormatInt(p.EventID, 10))
		s.log().WarnContext(ctx, "audit log verification failed", "kind", p.Kind, "seq", p.Seq, "event", p.EventID, "message", p.Message)
	}
	ev.Detail = strings.Join(d, " ")
	if err := s.record(ctx, a, ev); err != nil {
		return AuditReport{}, err
	}
	return r, nil
}

// record commits the success event of a read that has no transaction of
// its own to write it in; the read is not answered when it fails.
func (s *Service) record(ctx context.Context, a Actor, ev AuditEvent) error {
	ev.Actor, ev.Role, ev.ClientAddr = a.Subject, a.Role, a.ClientAddr
	ev.Outcome = OutcomeSuccess
	if err := s.Store.Audit(ctx, ev); err != nil {
		return asServerError(err, "recording the audit event of "+string(ev.Action))
	}
	return nil
}

// asServerError passes an *Error through and wraps anything else as
// EInternal.
func asServerError(err error, what string) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return Internal(err, what)
}
