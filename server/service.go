package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/voicecode"
)

// Service is the central service's policy: who may do what, what a valid
// request is, and how an issuance becomes a voice code and a grant. The
// transport (server/grpc) authenticates the caller and hands the Actor in;
// the Store performs the acts and writes their audit events in the same
// transaction. Service itself records the refusals it decides (permission,
// validation), with Store.Audit.
//
// A Service is safe for concurrent use once its fields are set.
type Service struct {
	// Store persists devices, issuances and the audit log.
	Store Store
	// Keyring derives device keys and signs grants.
	Keyring Keyring
	// Limits are the issuance limits (DefaultLimits from NewService).
	Limits Limits
	// Now is the clock (time.Now from NewService).
	Now func() time.Time
	// Logger receives operational logs; never a code, a grant or a key.
	Logger *slog.Logger
	// AuditLog verifies the tamper-evident audit log (server/audit's Log).
	// Optional: without it VerifyAudit and AuditCheckpoint are
	// EPrecondition.
	AuditLog AuditLog

	modelsMu sync.Mutex
	models   map[string]Model
}

// NewService returns a Service with the default limits, the system clock
// and the default logger.
func NewService(st Store, kr Keyring) *Service {
	return &Service{Store: st, Keyring: kr, Limits: DefaultLimits, Now: time.Now, Logger: slog.Default()}
}

// permissions says which roles may perform each act: the one place the
// role policy lives.
var permissions = map[Action][]Role{
	ActionRegister:      {RoleProvisioner},
	ActionImport:        {RoleProvisioner},
	ActionLookup:        {RoleAgent, RoleSupervisor},
	ActionOwnerCheck:    {RoleAgent, RoleSupervisor},
	ActionIssue:         {RoleAgent, RoleSupervisor},
	ActionListIssuances: {RoleAgent, RoleSupervisor},
	ActionHold:          {RoleSupervisor},
	ActionRelease:       {RoleSupervisor},
	// The audit log: auditors, and supervisors who answer for their team.
	ActionAuditQuery:      {RoleAuditor, RoleSupervisor},
	ActionAuditExport:     {RoleAuditor, RoleSupervisor},
	ActionAuditSummary:    {RoleAuditor, RoleSupervisor},
	ActionAuditCheckpoint: {RoleAuditor, RoleSupervisor},
	ActionAuditVerify:     {RoleAuditor, RoleSupervisor},
}

// Allowed reports whether role may perform act.
func Allowed(role Role, act Action) bool { return slices.Contains(permissions[act], role) }

// Field limits, in characters.
const (
	maxTicketLen    = 128
	maxNoteLen      = 1000
	maxReasonLen    = 500
	maxFirmwareLen  = 64
	maxRequestIDLen = 128
	// DefaultIssuancesPage and MaxIssuancesPage bound Issuances.
	DefaultIssuancesPage = 20
	MaxIssuancesPage     = 200
	// DefaultAuditPage and MaxAuditPage bound QueryAudit.
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
	// nearMatches is how many similar serials a NotFound suggests.
	nearMatches = 5
)

var (
	requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	actionRE    = regexp.MustCompile(`^[a-z_]+\.[a-z_]+$`)
)

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// refuse records a refusal decided here (permission, validation) as an
// audit event and returns err. The event is written even when the caller
// has gone away; a failure to write it is logged, and the refusal stands.
func (s *Service) refuse(ctx context.Context, a Actor, ev AuditEvent, err *Error) error {
	ev.Actor, ev.Role, ev.ClientAddr = a.Subject, a.Role, a.ClientAddr
	ev.Outcome = OutcomeRefused
	ev.Detail = string(err.Code)
	if err.Field != "" {
		ev.Detail += ":" + err.Field
	}
	if ev.Actor == "" || !a.Role.Valid() {
		return err // not authenticated: nothing to attribute
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if aerr := s.Store.Audit(actx, ev); aerr != nil {
		s.log().ErrorContext(ctx, "audit of a refusal failed", "action", ev.Action, "actor", ev.Actor, "err", aerr)
	}
	return err
}

// allow checks the role policy for act, recording a refusal.
// Authorize refuses, and audits the refusal, when a's role may not perform
// act. Transports call it before parsing a request's options, so that a
// role probing an RPC it may not use is recorded as a permission refusal.
func (s *Service) Authorize(ctx context.Context, a Actor, act Action) error {
	return s.allow(ctx, a, AuditEvent{Action: act})
}

func (s *Service) allow(ctx context.Context, a Actor, ev AuditEvent) error {
	if Allowed(a.Role, ev.Action) {
		return nil
	}
	roles := permissions[ev.Action]
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return s.refuse(ctx, a, ev, &Error{Code: EPermission, Reason: ReasonRoleNotAllowed, Roles: roles,
		Message: fmt.Sprintf("role %q may not perform %s: it needs the role %s", a.Role, ev.Action, strings.Join(names, " or "))})
}

// parseError turns an agent/serial parse error into EInvalid naming field.
func parseError(field string, err error) *Error {
	var pe *serial.ParseError
	if errors.As(err, &pe) {
		what := pe.Field
		if what == field || what == "query" || what == "serial" {
			return Invalid(field, "%s %q: expected %s", field, pe.Got, pe.Expected)
		}
		return Invalid(field, "%s: the %s part %q is wrong: expected %s", field, strings.ReplaceAll(what, "_", " "), pe.Got, pe.Expected)
	}
	return Invalid(field, "%s: %v", field, err)
}

// checkText validates a free-text field: required or not, length, no
// control characters.
func checkText(field, v string, required bool, max int) *Error {
	if strings.TrimSpace(v) == "" {
		if required {
			return Invalid(field, "%s is required", field)
		}
		return nil
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > max {
		return Invalid(field, "%s: expected at most %d characters of UTF-8 text", field, max)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) {
		return Invalid(field, "%s: expected text without control characters", field)
	}
	return nil
}

// bestSerial is the canonical serial in q when q holds a full one, for the
// audit event of a refusal decided before q is resolved; "" otherwise.
func bestSerial(q string) string {
	if p, err := serial.ParseQuery(q); err == nil && p.Serial != nil {
		return p.Serial.String()
	}
	return ""
}

// resolve turns a query (full serial, QR payload or device id) into a
// canonical serial. A device id alone is looked up (which is audited as a
// lookup by the store).
func (s *Service) resolve(ctx context.Context, a Actor, field, q string) (string, error) {
	p, err := serial.ParseQuery(q)
	if err != nil {
		return "", parseError(field, err)
	}
	if p.Serial != nil {
		return p.Serial.String(), nil
	}
	d, err := s.Store.LookupDeviceID(ctx, a, p.DeviceID)
	if err != nil {
		return "", s.withNearMatches(ctx, p.DeviceID, err)
	}
	return d.Serial, nil
}

// withNearMatches makes the NotFound error of a device lookup for q
// ReasonDeviceNotFound (a store may leave the reason unset) and adds near
// matches when it has none. Other errors pass through.
func (s *Service) withNearMatches(ctx context.Context, q string, err error) error {
	var e *Error
	if !errors.As(err, &e) || e.Code != ENotFound || (len(e.NearMatches) > 0 && e.Reason != "") {
		return err
	}
	e2 := *e
	if e2.Reason == "" {
		e2.Reason = ReasonDeviceNotFound
	}
	if len(e2.NearMatches) == 0 {
		near, nerr := s.Store.NearMatches(ctx, q, nearMatches)
		if nerr != nil {
			s.log().WarnContext(ctx, "near matches failed", "err", nerr)
		} else {
			e2.NearMatches = near
		}
	}
	return &e2
}

// modelInfo returns the catalogue entry for code (cached: the catalogue
// changes only with a migration).
func (s *Service) modelInfo(ctx context.Context, code string) (Model, bool, error) {
	s.modelsMu.Lock()
	defer s.modelsMu.Unlock()
	if m, ok := s.models[code]; ok || s.models != nil {
		return m, ok, nil
	}
	ms, err := s.Store.Models(ctx)
	if err != nil {
		return Model{}, false, err
	}
	s.models = make(map[string]Model, len(ms))
	for _, m := range ms {
		s.models[m.Code] = m
	}
	m, ok := s.models[code]
	return m, ok, nil
}

// modelCodes lists the catalogue for an error message.
func (s *Service) modelCodes() string {
	s.modelsMu.Lock()
	defer s.modelsMu.Unlock()
	codes := make([]string, 0, len(s.models))
	for c := range s.models {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return strings.Join(codes, ", ")
}

// DeviceView is a device as staff see it: the owner contact masked, the
// model's catalogue entry, the recent issuance count.
type DeviceView struct {
	// Device is the registry entry with OwnerContact masked (MaskContact).
	Device Device
	// ModelInfo is Device.Model's catalogue entry.
	ModelInfo Model
	// RecentIssuances counts the device's issuances in the last 24 hours
	// (LookupDevice only).
	RecentIssuances int
	// PerDeviceLimit is Limits.PerDevice.
	PerDeviceLimit int
}

func (s *Service) view(ctx context.Context, d Device) (DeviceView, error) {
	m, _, err := s.modelInfo(ctx, d.Model)
	if err != nil {
		return DeviceView{}, Internal(err, "reading the model catalogue")
	}
	if m.Code == "" {
		m.Code = d.Model
	}
	d.OwnerContact = MaskContact(d.OwnerContact)
	return DeviceView{Device: d, ModelInfo: m, PerDeviceLimit: s.Limits.PerDevice}, nil
}

// NewDevice is a provisioner's request to register a device.
type NewDevice struct {
	// Serial as printed; canonicalised.
	Serial string
	// Model is a catalogue code.
	Model string
	// OwnerContact is an e-mail address or phone number.
	OwnerContact string
	// Firmware is optional.
	Firmware string
	// KeyGeneration is the master-key generation the factory derived the
	// device key under; 0 means Keyring.CurrentGeneration().
	KeyGeneration int
}

// RegisterDevice validates and registers one device (role provisioner).
func (s *Service) RegisterDevice(ctx context.Context, a Actor, in NewDevice) (DeviceView, error) {
	ev := AuditEvent{Action: ActionRegister, Serial: bestSerial(in.Serial)}
	if err := s.allow(ctx, a, ev); err != nil {
		return DeviceView{}, err
	}
	sn, err := serial.Parse(in.Serial)
	if err != nil {
		return DeviceView{}, s.refuse(ctx, a, ev, parseError("serial", err))
	}
	ev.Serial = sn.String()
	model := strings.ToUpper(strings.TrimSpace(in.Model))
	if _, ok, err := s.modelInfo(ctx, model); err != nil {
		return DeviceView{}, Internal(err, "reading the model catalogue")
	} else if !ok {
		return DeviceView{}, s.refuse(ctx, a, ev, Invalid("model", "model %q: expected one of %s", in.Model, s.modelCodes()))
	}
	contact := NormaliseContact(in.OwnerContact)
	if ok, want := ValidContact(contact); !ok {
		return DeviceView{}, s.refuse(ctx, a, ev, Invalid("owner_contact", "owner_contact: expected %s", want))
	}
	fw := strings.TrimSpace(in.Firmware)
	if e := checkText("firmware", fw, false, maxFirmwareLen); e != nil {
		return DeviceView{}, s.refuse(ctx, a, ev, e)
	}
	gen := in.KeyGeneration
	if gen == 0 {
		gen = s.Keyring.CurrentGeneration()
	}
	if gen < 1 || gen > voicecode.MaxGeneration || gen > s.Keyring.CurrentGeneration() {
		return DeviceView{}, s.refuse(ctx, a, ev, Invalid("key_generation", "key_generation %d: expected 1 to %d (0 for the current one)", in.KeyGeneration, s.Keyring.CurrentGeneration()))
	}
	d := Device{
		Serial:         sn.String(),
		DeviceID:       sn.DeviceID,
		Model:          model,
		ProductionDate: sn.Date,
		Firmware:       fw,
		OwnerContact:   contact,
		KeyGeneration:  gen,
		RegisteredAt:   s.now().UTC(),
	}
	if err := s.Store.RegisterDevice(ctx, a, d); err != nil {
		return DeviceView{}, err
	}
	return s.view(ctx, d)
}

// LookupDevice finds a device by full serial, device id or QR payload
// (roles agent, supervisor). The owner contact comes back masked.
func (s *Service) LookupDevice(ctx context.Context, a Actor, query string) (DeviceView, error) {
	ev := AuditEvent{Action: ActionLookup, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return DeviceView{}, err
	}
	q, err := serial.ParseQuery(query)
	if err != nil {
		return DeviceView{}, s.refuse(ctx, a, ev, parseError("query", err))
	}
	var d Device
	if q.Serial != nil {
		d, err = s.Store.LookupDevice(ctx, a, q.Serial.String())
		if err != nil {
			return DeviceView{}, s.withNearMatches(ctx, q.Serial.String(), err)
		}
	} else {
		d, err = s.Store.LookupDeviceID(ctx, a, q.DeviceID)
		if err != nil {
			return DeviceView{}, s.withNearMatches(ctx, q.DeviceID, err)
		}
	}
	v, err := s.view(ctx, d)
	if err != nil {
		return DeviceView{}, err
	}
	// What the agent needs to know before promising a code.
	v.RecentIssuances = d.RecentIssuances
	return v, nil
}

// CheckOwner says whether claimed matches the registered owner contact
// (roles agent, supervisor), never revealing the registered one.
func (s *Service) CheckOwner(ctx context.Context, a Actor, query, claimed string) (bool, error) {
	ev := AuditEvent{Action: ActionOwnerCheck, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return false, err
	}
	claimed = NormaliseContact(claimed)
	if ok, want := ValidContact(claimed); !ok {
		return false, s.refuse(ctx, a, ev, Invalid("claimed_contact", "claimed_contact: expected %s", want))
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return false, s.refuseInvalid(ctx, a, ev, err)
	}
	return s.Store.CheckOwner(ctx, a, sn, claimed)
}

// refuseInvalid records err as the act's own refusal when the request was
// malformed (EInvalid) or named no registered device (ENotFound: the device
// id lookup recorded only the lookup); other errors pass through (the store
// recorded its own).
func (s *Service) refuseInvalid(ctx context.Context, a Actor, ev AuditEvent, err error) error {
	var e *Error
	if errors.As(err, &e) && (e.Code == EInvalid || e.Code == ENotFound) {
		return s.refuse(ctx, a, ev, e)
	}
	return err
}

// HoldDevice places a hold (role supervisor): the device gets no code until
// released.
func (s *Service) HoldDevice(ctx context.Context, a Actor, query, reason string) (Hold, error) {
	ev := AuditEvent{Action: ActionHold, Serial: bestSerial(query), Reason: clip(reason, maxReasonLen)}
	if err := s.allow(ctx, a, ev); err != nil {
		return Hold{}, err
	}
	if e := checkText("reason", reason, true, maxReasonLen); e != nil {
		return Hold{}, s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return Hold{}, s.refuseInvalid(ctx, a, ev, err)
	}
	h := Hold{Reason: strings.TrimSpace(reason), By: a.Subject, Since: s.now().UTC().Truncate(time.Microsecond)}
	if err := s.Store.SetHold(ctx, a, sn, &h, ""); err != nil {
		return Hold{}, err
	}
	return h, nil
}

// ReleaseDevice lifts a hold (role supervisor); the reason is required and
// recorded in the release's audit event.
func (s *Service) ReleaseDevice(ctx context.Context, a Actor, query, reason string) error {
	ev := AuditEvent{Action: ActionRelease, Serial: bestSerial(query), Reason: clip(reason, maxReasonLen)}
	if err := s.allow(ctx, a, ev); err != nil {
		return err
	}
	if e := checkText("reason", reason, true, maxReasonLen); e != nil {
		return s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return s.refuseInvalid(ctx, a, ev, err)
	}
	return s.Store.SetHold(ctx, a, sn, nil, reason)
}

// Issued is an issuance with its credentials, as returned to the caller
// once (and again, identically, to an idempotent retry).
type Issued struct {
	Issuance
	// VoiceCode is the grouped code the customer types. Never log it.
	VoiceCode string
	// Phonetic is VoiceCode spelt out for the phone.
	Phonetic string
	// Grant is the signed JWT of the same issuance.
	Grant string
}

// Issue issues a temporary password (roles agent, supervisor). req.Serial
// may be any query form; it is canonicalised. The store runs the issuance
// transaction (idempotency, hold, limits, sequence, audit); the code and the
// grant are then minted from the stored issuance, so a retry with the same
// request id returns the identical credentials.
func (s *Service) Issue(ctx context.Context, a Actor, req IssueRequest) (Issued, error) {
	ev := AuditEvent{Action: ActionIssue, Serial: bestSerial(req.Serial), Ticket: clip(req.Ticket, maxTicketLen), Reason: clip(req.OverrideReason, maxReasonLen), RequestID: clip(req.RequestID, maxRequestIDLen)}
	if req.Method >= VerifyOwnerContact && req.Method <= VerifyOther {
		ev.Method = req.Method
	}
	if err := s.allow(ctx, a, ev); err != nil {
		return Issued{}, err
	}
	if e := s.checkIssue(a, &req); e != nil {
		return Issued{}, s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", req.Serial)
	if err != nil {
		return Issued{}, s.refuseInvalid(ctx, a, ev, err)
	}
	req.Serial = sn

	kid, _ := s.Keyring.GrantSigner()
	iss, err := s.Store.Issue(ctx, a, req, s.Limits, func(iss *Issuance) {
		// IssuedAt (database clock) and KeyGeneration (the device's own)
		// come from the store, read under the device's row lock.
		iss.ID = NewUUID()
		iss.SigningKeyID = kid
		iss.ExpiresAt = voicecode.ExpiresAt(iss.IssuedAt)
	})
	if err != nil {
		return Issued{}, err
	}
	out, err := s.mint(iss)
	if err != nil {
		s.log().ErrorContext(ctx, "minting a committed issuance failed", "issuance", iss.ID, "serial", iss.Serial, "err", err)
		return Issued{}, Internal(err, "minting the temporary password")
	}
	s.log().InfoContext(ctx, "issued", "issuance", iss.ID, "serial", iss.Serial, "sequence", iss.Sequence, "actor", a.Subject)
	return out, nil
}

// checkIssue validates an issue request, normalising it in place.
func (s *Service) checkIssue(a Actor, req *IssueRequest) *Error {
	req.RequestID = strings.TrimSpace(req.RequestID)
	if req.RequestID == "" {
		return Invalid("request_id", "request_id is required: send a fresh UUID, and the same one on a retry")
	}
	if !requestIDRE.MatchString(req.RequestID) {
		return Invalid("request_id", "request_id: expected 1 to %d letters, digits or . _ : - (a UUID)", maxRequestIDLen)
	}
	req.Ticket = strings.TrimSpace(req.Ticket)
	if e := checkText("ticket", req.Ticket, true, maxTicketLen); e != nil {
		if req.Ticket == "" {
			e.Message = "ticket is required: give the support ticket reference"
		}
		return e
	}
	switch req.Method {
	case VerifyOwnerContact, VerifyProofOfPurchase, VerifyInstallerAccount, VerifyOther:
	default:
		return Invalid("verification_method", "verification_method is required: expected OWNER_CONTACT_MATCHED, PROOF_OF_PURCHASE, INSTALLER_ACCOUNT or OTHER (with a note)")
	}
	req.MethodNote = strings.TrimSpace(req.MethodNote)
	if e := checkText("verification_note", req.MethodNote, req.Method == VerifyOther, maxNoteLen); e != nil {
		if req.MethodNote == "" {
			e.Message = "verification_note is required with verification method OTHER: say what was checked"
		}
		return e
	}
	req.OverrideReason = strings.TrimSpace(req.OverrideReason)
	if e := checkText("override_reason", req.OverrideReason, false, maxReasonLen); e != nil {
		return e
	}
	if req.OverrideReason != "" && a.Role != RoleSupervisor {
		return &Error{Code: EPermission, Field: "override_reason", Message: "only a supervisor may give an override_reason (to issue over a limit): leave it empty or ask a supervisor"}
	}
	return nil
}

// mint derives the voice code and the grant of a stored issuance. Both are
// deterministic in the issuance's fields.
func (s *Service) mint(iss Issuance) (Issued, error) {
	k, err := s.Keyring.DeviceKey(iss.Serial, iss.KeyGeneration)
	if err != nil {
		return Issued{}, fmt.Errorf("device key of generation %d: %w", iss.KeyGeneration, err)
	}
	code, err := voicecode.Mint(k, iss.Serial, iss.IssuedAt, iss.Sequence)
	if err != nil {
		return Issued{}, err
	}
	// Sign with the key the issuance recorded, so that a retry returns the
	// identical grant even after a rotation (Ed25519 is deterministic).
	kid := iss.SigningKeyID
	sk, ok := s.Keyring.GrantKey(kid)
	if !ok {
		// That key was retired since: re-sign the same claims with the
		// current key, still verifiable through the published key set.
		kid, sk = s.Keyring.GrantSigner()
		s.log().Warn("grant re-signed under a newer key", "issuance", iss.ID, "stored_kid", iss.SigningKeyID, "kid", kid)
	}
	g, err := grant.Sign(sk, kid, grant.NewClaims(iss.Serial, iss.ID, iss.Sequence, iss.IssuedAt, iss.ExpiresAt))
	if err != nil {
		return Issued{}, err
	}
	return Issued{Issuance: iss, VoiceCode: code, Phonetic: voicecode.Phonetic(code), Grant: g}, nil
}

// Issuances lists a device's issuances, newest first, without codes (roles
// agent, supervisor). limit 0 means DefaultIssuancesPage.
func (s *Service) Issuances(ctx context.Context, a Actor, query string, limit int) ([]Issuance, error) {
	ev := AuditEvent{Action: ActionListIssuances, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return nil, err
	}
	switch {
	case limit == 0:
		limit = DefaultIssuancesPage
	case limit < 0 || limit > MaxIssuancesPage:
		return nil, s.refuse(ctx, a, ev, Invalid("page_size", "page_size %d: expected 0 (default %d) to %d", limit, DefaultIssuancesPage, MaxIssuancesPage))
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return nil, s.refuseInvalid(ctx, a, ev, err)
	}
	return s.Store.Issuances(ctx, a, sn, limit)
}

// GrantJWKS returns the grant-verification public keys as a JWK set (any
// authenticated role: the keys are public).
func (s *Service) GrantJWKS(ctx context.Context, a Actor) ([]byte, error) {
	if !a.Role.Valid() {
		return nil, &Error{Code: EPermission, Message: "a staff role is required"}
	}
	b, err := s.Keyring.GrantJWKS()
	if err != nil {
		return nil, Internal(err, "reading the grant keys")
	}
	return b, nil
}

// clip bounds a refused request's text before it goes into the audit log.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// NewUUID returns a random (version 4) UUID from crypto/rand.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails (Go 1.24+).
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
