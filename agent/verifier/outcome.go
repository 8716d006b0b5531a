package verifier

// Outcome is the result of a verification, and the exit status of
// `dvr-agent`. The values cross a process boundary (the DVR firmware matches
// on them): the list is append-only. Do not renumber, do not reuse.
type Outcome int

// Outcomes. The exit status of `dvr-agent verify` is the Outcome's value.
const (
	// Accepted: genuine, fresh, newer than anything used before. The caller
	// must now force a new password.
	Accepted Outcome = 0
	// Internal: an unexpected failure of the agent itself.
	Internal Outcome = 1
	// Usage: the command line is wrong (the firmware's bug, not the user's).
	Usage Outcome = 2
	// Malformed: not a code or grant at all, or a typo caught by the check
	// symbol. Not a failed attempt.
	Malformed Outcome = 3
	// WrongCode: well formed but not genuine for this DVR (wrong MAC, bad
	// signature, unknown key, another device's grant). A failed attempt.
	WrongCode Outcome = 4
	// Expired: genuine but past its validity. Not a failed attempt.
	Expired Outcome = 5
	// NotYetValid: genuine but issued for later than the DVR's clock
	// (allowing for skew): the clock is behind. Not a failed attempt.
	NotYetValid Outcome = 6
	// AlreadyUsed: genuine, but it or a newer credential was accepted
	// before. Not a failed attempt.
	AlreadyUsed Outcome = 7
	// LockedOut: too many failed attempts; Result.RetryAfter says when to
	// try again. Nothing was checked.
	LockedOut Outcome = 8
	// ClockNotSet: the DVR's clock is before the agent's build date.
	// Nothing was checked or recorded.
	ClockNotSet Outcome = 9
	// StateUnreadable: the replay and lockout state is missing, corrupt or of
	// an unknown version. Nothing was checked; the DVR needs service.
	StateUnreadable Outcome = 10
	// ConfigUnreadable: the device key file or the trust file cannot be
	// read, is malformed, or is for another serial.
	ConfigUnreadable Outcome = 11
	// StateUnwritable: the state could not be saved, so nothing was
	// accepted (and, for a check that had not run yet, not even checked).
	StateUnwritable Outcome = 12
	// StateBusy: another verification held the state lock too long.
	StateBusy Outcome = 13
	// ClockMovedBack: the clock is earlier than a time the DVR has already
	// seen (by more than the skew): it was set back. Time-based
	// credentials are not judged; a challenge-bound code still works.
	ClockMovedBack Outcome = 14
	// NoRequest: a challenge-bound code, but no request code is on show
	// (answered, replaced, older than 24 hours, or the DVR restarted).
	// Not a failed attempt.
	NoRequest Outcome = 15
	// RecoveryNotSet: recovery-code without a recovery e-mail address.
	RecoveryNotSet Outcome = 16
	// Throttled: a recovery e-mail was sent less than MailInterval ago.
	Throttled Outcome = 17
	// MailFailed: the recovery e-mail could not be sent; nothing changed.
	MailFailed Outcome = 18
	// MailNotBuilt: recovery-code was asked to send the e-mail itself, but
	// this build of the agent has no mailer (it was built without the smtp
	// tag): the firmware must pass --stdout and mail the code itself.
	MailNotBuilt Outcome = 19
)

var outcomeNames = [...]string{
	Accepted:         "accepted",
	Internal:         "internal-error",
	Usage:            "usage",
	Malformed:        "malformed",
	WrongCode:        "wrong-code",
	Expired:          "expired",
	NotYetValid:      "not-yet-valid",
	AlreadyUsed:      "already-used",
	LockedOut:        "locked-out",
	ClockNotSet:      "clock-not-set",
	StateUnreadable:  "state-unreadable",
	ConfigUnreadable: "config-unreadable",
	StateUnwritable:  "state-unwritable",
	StateBusy:        "state-busy",
	ClockMovedBack:   "clock-moved-back",
	NoRequest:        "no-request",
	RecoveryNotSet:   "recovery-email-not-set",
	Throttled:        "throttled",
	MailFailed:       "mail-failed",
	MailNotBuilt:     "mail-not-built",
}

// String returns the outcome's stable name, e.g. "locked-out".
func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "unknown"
}

// ExitCode returns the process exit status for o.
func (o Outcome) ExitCode() int { return int(o) }

// Outcomes returns every defined outcome, in order.
func Outcomes() []Outcome {
	out := make([]Outcome, len(outcomeNames))
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}
