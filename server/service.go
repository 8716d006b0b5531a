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

	"github.com/dvrhotline/hotline/agent/clip"
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
	// ImportMaxRows bounds the valid rows of one import (0 and anything
	// over MaxImportRows mean MaxImportRows).
	ImportMaxRows int
	// AuditLog verifies the tamper-evident audit log (server/audit's Log).
	// Optional: without it VerifyAudit and AuditCheckpoint are
	// EPrecondition.
	AuditLog AuditLog
	// Verify are the owner-guess and code limits (DefaultVerifyLimits
	// for zero fields).
	Verify VerifyLimits
	// Outbox, when set, is woken as soon as a message is queued.
	Outbox *Outbox
	// Approvals keeps the requests for a supervisor's approval. Optional:
	// without it the approval acts are EPrecondition.
	Approvals ApprovalStore

	modelsMu sync.Mutex
	models   map[string]Model

	exportsMu sync.Mutex
	exports   map[string]int // audit exports streaming now, by subject
}

// NewService returns a Service with the default limits, the system clock
// and the default logger.
func NewService(st Store, kr Keyring) *Service {
	return &Service{Store: st, Keyring: kr, Limits: DefaultLimits, Now: time.Now, Logger: slog.Default()}
}

// permissions says which roles may perform each act: the one place the
// role policy lives.
var permissions = map[Action][]Role{
	ActionRegister:       {RoleProvisioner},
	ActionImport:         {RoleProvisioner},
	ActionLookup:         {RoleAgent, RoleSupervisor},
	ActionOwnerCheck:     {RoleAgent, RoleSupervisor},
	ActionOwnerCodeSend:  {RoleAgent, RoleSupervisor},
	ActionOwnerCodeCheck: {RoleAgent, RoleSupervisor},
	ActionMailStatus:     {RoleAgent, RoleSupervisor},
	ActionIssue:          {RoleAgent, RoleSupervisor},
	ActionListIssuances:  {RoleAgent, RoleSupervisor},
	ActionHold:           {RoleSupervisor},
	ActionRelease:        {RoleSupervisor},
	// The audit log: auditors, and supervisors who answer for their team.
	ActionAuditQuery:      {RoleAuditor, RoleSupervisor},
	ActionAuditExport:     {RoleAuditor, RoleSupervisor},
	ActionAuditSummary:    {RoleAuditor, RoleSupervisor},
	ActionAuditCheckpoint: {RoleAuditor, RoleSupervisor},
	ActionAuditVerify:     {RoleAuditor, RoleSupervisor},
	// Asking for a supervisor's approval, and seeing the granted code;
	// answering (who may answer which request: DecideApproval).
	ActionApprovalRequest: {RoleAgent, RoleSupervisor},
	ActionApprovalReveal:  {RoleAgent, RoleSupervisor},
	ActionApprovalGrant:   {RoleSupervisor},
	ActionApprovalDeny:    {RoleSupervisor},
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

// checkText validates a one-line free-text field (a ticket, a reason, a
// file name): required or not, length, and no character of
// UnsafeInLine. checkNote is the rule for the multi-line fields.
func checkText(field, v string, required bool, max int) *Error {
	return checkFree(field, v, required, max, false)
}

// checkNote validates a multi-line free-text field (a verification note):
// as checkText, but newlines and tabs are allowed.
func checkNote(field, v string, required bool, max int) *Error {
	return checkFree(field, v, required, max, true)
}

func checkFree(field, v string, required bool, max int, multiLine bool) *Error {
	if strings.TrimSpace(v) == "" {
		if required {
			return Invalid(field, "%s is required", field)
		}
		return nil
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > max {
		return Invalid(field, "%s: expected at most %d characters of UTF-8 text", field, max)
	}
	if i := strings.IndexFunc(v, func(r rune) bool { return UnsafeInLine(r) && !(multiLine && (r == '\n' || r == '\t')) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(v[i:])
		what := "one line of text"
		if multiLine {
			what = "text"
		}
		return Invalid(field, "%s: expected %s without control characters or bidirectional formatting characters, found %U at byte %d", field, what, r, i)
	}
	return nil
}

// UnsafeInLine reports whether r may not appear in a one-line field
// (anything shown in one line of a table or a log): a control character
// (newline, tab, NUL, escape...), a bidirectional formatting character
// (the right-to-left override reorders what a terminal shows after it), or
// a line or paragraph separator.
func UnsafeInLine(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || unicode.In(r, unicode.Zl, unicode.Zp)
}

// OneLine reports whether s is valid UTF-8 holding no character of
// UnsafeInLine.
func OneLine(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, UnsafeInLine)
}

// bestSerial is the canonical serial in q when q holds a full one, for the
// audit event of a refusal decided before q is resolved; "" otherwise.
func bestSerial(q string) string {
	return parseQuery(q).canonical
}

// parsedQuery is a serial query parsed once, for an act that needs both
// its bestSerial (before the checks) and its resolution (after them).
type parsedQuery struct {
	q   serial.Query
	err error
	// canonical is the canonical serial when q holds a full one, else "".
	canonical string
}

// parseQuery parses a query (full serial, QR payload or device id).
func parseQuery(q string) parsedQuery {
	p, err := serial.ParseQuery(q)
	pq := parsedQuery{q: p, err: err}
	if err == nil && p.Serial != nil {
		pq.canonical = p.Serial.String()
	}
	return pq
}

// resolve turns a query (full serial, QR payload or device id) into a
// canonical serial. A device id alone is looked up (which is audited as a
// lookup by the store).
func (s *Service) resolve(ctx context.Context, a Actor, field, q string) (string, error) {
	return s.resolveParsed(ctx, a, field, parseQuery(q))
}

// resolveParsed is resolve of a query parseQuery parsed.
func (s *Service) resolveParsed(ctx context.Context, a Actor, field string, pq parsedQuery) (string, error) {
	if pq.err != nil {
		return "", parseError(field, pq.err)
	}
	if pq.canonical != "" {
		return pq.canonical, nil
	}
	d, err := s.Store.LookupDeviceID(ctx, a, pq.q.DeviceID)
	if err != nil {
		return "", s.withNearMatches(ctx, pq.q.DeviceID, err)
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
	// Serial, Model, OwnerContact and Firmware are as typed (see
	// ValidDevice for their rules).
	Serial       string
	Model        string
	OwnerContact string
	Firmware     string
	// KeyGeneration is the master-key generation the factory derived the
	// device key under; 0 means Keyring.CurrentGeneration().
	KeyGeneration int
}

// RegisterDevice validates (ValidDevice) and registers one device (role
// provisioner).
func (s *Service) RegisterDevice(ctx context.Context, a Actor, in NewDevice) (DeviceView, error) {
	ev := AuditEvent{Action: ActionRegister, Serial: bestSerial(in.Serial)}
	if err := s.allow(ctx, a, ev); err != nil {
		return DeviceView{}, err
	}
	models, err := s.modelSet(ctx)
	if err != nil {
		return DeviceView{}, err
	}
	d, e := ValidDevice(DeviceInput{Serial: in.Serial, Model: in.Model, Firmware: in.Firmware, OwnerContact: in.OwnerContact}, models)
	if e != nil {
		if e.Field == "model" {
			e.Message += " (the catalogue: " + s.modelCodes() + ")"
		}
		return DeviceView{}, s.refuse(ctx, a, ev, e)
	}
	ev.Serial = d.Serial
	gen, e := s.keyGeneration("key_generation", in.KeyGeneration)
	if e != nil {
		return DeviceView{}, s.refuse(ctx, a, ev, e)
	}
	d.KeyGeneration = gen
	d.RegisteredAt = s.now().UTC()
	if err := s.Store.RegisterDevice(ctx, a, d); err != nil {
		return DeviceView{}, err
	}
	return s.view(ctx, d)
}

// keyGeneration is the one rule for the master-key generation of new
// devices, registered or imported: 0 means the keyring's current one (read
// now, so a rotation applies at once); otherwise 1 to the current one.
func (s *Service) keyGeneration(field string, requested int) (int, *Error) {
	current := 1 // a service without a keyring (tests of the registry alone)
	if s.Keyring != nil {
		current = s.Keyring.CurrentGeneration()
	}
	if requested == 0 {
		return current, nil
	}
	if requested < 1 || requested > voicecode.MaxGeneration || requested > current {
		return 0, Invalid(field, "%s %d: expected 1 to %d (0 for the current one)", field, requested, current)
	}
	return requested, nil
}

// modelSet returns the catalogue's codes as a set, for ValidDevice.
func (s *Service) modelSet(ctx context.Context) (map[string]bool, error) {
	if _, _, err := s.modelInfo(ctx, ""); err != nil {
		return nil, Internal(err, "reading the model catalogue")
	}
	s.modelsMu.Lock()
	defer s.modelsMu.Unlock()
	set := make(map[string]bool, len(s.models))
	for c := range s.models {
		set[c] = true
	}
	return set, nil
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
	return s.Store.CheckOwner(ctx, a, sn, func(f OwnerCheckFacts) OwnerVerdict { return JudgeOwnerCheck(s.Verify, f, claimed) })
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
	ev := AuditEvent{Action: ActionHold, Serial: bestSerial(query), Reason: clip.Clip(reason, maxReasonLen)}
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
	ev := AuditEvent{Action: ActionRelease, Serial: bestSerial(query), Reason: clip.Clip(reason, maxReasonLen)}
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

// Issuances lists a device's issuances, newest first, without codes (roles
// agent, supervisor), one page of pageSize (0 means DefaultIssuancesPage,
// more than MaxIssuancesPage is clamped to it). pageToken is empty or a
// NextPageToken of the same device's list.
func (s *Service) Issuances(ctx context.Context, a Actor, query string, pageSize int, pageToken string) (IssuancesPage, error) {
	ev := AuditEvent{Action: ActionListIssuances, Serial: bestSerial(query)}
	if err := s.allow(ctx, a, ev); err != nil {
		return IssuancesPage{}, err
	}
	size, e := pageSizeOf(pageSize, DefaultIssuancesPage, MaxIssuancesPage)
	if e != nil {
		return IssuancesPage{}, s.refuse(ctx, a, ev, e)
	}
	sn, err := s.resolve(ctx, a, "serial", query)
	if err != nil {
		return IssuancesPage{}, s.refuseInvalid(ctx, a, ev, err)
	}
	var before int64
	if pageToken != "" {
		t, e := decodeIssuancesToken(pageToken, sn)
		if e != nil {
			ev.Serial = sn
			return IssuancesPage{}, s.refuse(ctx, a, ev, e)
		}
		before = t.Seq
	}
	// One more than the page tells whether a next page exists.
	list, err := s.Store.Issuances(ctx, a, sn, before, size+1)
	if err != nil {
		return IssuancesPage{}, err
	}
	p := IssuancesPage{Issuances: list}
	if len(list) > size {
		p.Issuances = list[:size]
		p.NextPageToken = issuancesToken{V: issuancesTokenVersion, Serial: sn, Seq: p.Issuances[size-1].Sequence}.encode()
	}
	return p, nil
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

// NewUUID returns a random (version 4) UUID from crypto/rand.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails (Go 1.24+).
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
