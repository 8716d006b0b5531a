package server

import (
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
)

// issuanceMACDomain starts every IssuanceMACMessage: a MAC over an
// issuance can never be taken for a MAC over anything else.
const issuanceMACDomain = "hotline/issuance/v1"

// IssuanceMACSize is the length of an issuance's MAC (HMAC-SHA256).
const IssuanceMACSize = 32

// ErrIssuanceUnproven is why a stored issuance is refused: its MAC is
// missing or does not verify, so the service did not write it as it is
// (it was inserted or changed in the database).
var ErrIssuanceUnproven = errors.New("the stored issuance carries no valid proof that this service made it")

// IssuanceMACMessage is what an issuance's MAC covers: the domain, then
// every field a code, a grant or an audit reader takes from the issuance,
// each as a 4-byte big-endian length and its bytes (integers and times as
// 8 bytes big-endian; times in microseconds since 1970, the database's
// precision). A field added to Issuance is appended here.
func IssuanceMACMessage(iss Issuance) []byte {
	b := make([]byte, 0, 256)
	str := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	num := func(n int64) {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	str(issuanceMACDomain)
	str(iss.ID)
	str(iss.RequestID)
	str(iss.Serial)
	num(iss.Sequence)
	num(int64(iss.KeyGeneration))
	str(iss.SigningKeyID)
	num(iss.IssuedAt.UnixMicro())
	num(iss.ExpiresAt.UnixMicro())
	str(iss.Actor)
	str(string(iss.ActorRole))
	str(iss.Ticket)
	num(int64(iss.Method))
	str(iss.MethodNote)
	str(iss.OverrideReason)
	if iss.RequestCode != "" {
		// Appended only when set, so that the messages (and the vectors) of
		// time-based issuances stay as they were; the field is last, so the
		// encoding stays injective.
		str(iss.RequestCode)
	}
	return b
}

// issuanceMAC is the MAC the service gives a new issuance.
func (s *Service) issuanceMAC(iss Issuance) (mac [IssuanceMACSize]byte, err error) {
	b, err := s.Keyring.IssuanceMAC(iss.KeyGeneration, IssuanceMACMessage(iss))
	if err != nil {
		return mac, fmt.Errorf("issuance MAC: %w", err)
	}
	if len(b) != IssuanceMACSize {
		return mac, fmt.Errorf("issuance MAC: the keyring returned %d bytes, want %d", len(b), IssuanceMACSize)
	}
	return [IssuanceMACSize]byte(b), nil
}

// checkIssuanceMAC is the one check before a code is derived from a stored
// issuance: its MAC must be the service's, in constant time.
func (s *Service) checkIssuanceMAC(iss Issuance) error {
	if iss.MAC == ([IssuanceMACSize]byte{}) {
		return ErrIssuanceUnproven
	}
	want, err := s.issuanceMAC(iss)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrIssuanceUnproven, err)
	}
	if !hmac.Equal(want[:], iss.MAC[:]) {
		return ErrIssuanceUnproven
	}
	return nil
}

// refuseUnproven is the decision on a retry whose stored issuance fails
// checkIssuanceMAC: refused and audited (detail "issuance_unproven", with
// the row's id for the auditors), never handed out; a new request id gets
// a new issuance under the whole policy.
func refuseUnproven(f IssueFacts, cause error) IssueDecision {
	a, req := f.Actor, f.Request
	return IssueDecision{
		Event: AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: ActionIssue, Outcome: OutcomeRefused,
			Serial: req.Serial, Ticket: req.Ticket, Method: req.Method, Reason: req.OverrideReason, RequestID: req.RequestID,
			IssuanceID: f.Existing.ID, Detail: fmt.Sprintf("issuance_unproven seq=%d", f.Existing.Sequence)},
		Refusal: &Error{Code: EConflict, Reason: ReasonRequestIDReused, Field: "request_id", Err: cause,
			Message: "the issuance stored under this request id was not made by this service (its proof does not verify): " +
				"it was reported to the auditors; use a new request id"},
	}
}
