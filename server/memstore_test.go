package server_test

// An in-memory server.Store and server.ImportStore, a fake AuditLog and a
// test clock, so that the service's policy is tested without PostgreSQL.
// The store does what server/postgres does (read the facts, let the
// service decide, write what it decided, audit every act) with one mutex
// for its locks; each method can be replaced through a function field to
// inject an error. It records every audit event it was asked to write.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/server"
)

// testClock is a settable clock shared by the service and the store.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// memDevice is a registered device with the issuance state the devices
// table keeps.
type memDevice struct {
	server.Device
	lastSequence int64
	lastIssuedAt time.Time
}

// memImport is one import's row of device_imports, with its batches.
type memImport struct {
	actor    string
	opts     server.ImportOptions
	finished bool
	batches  map[int]server.ImportReport
}

// memStore implements server.Store and server.ImportStore in memory.
// A nil function field means the in-memory behaviour.
type memStore struct {
	clock *testClock

	ModelsFn         func(ctx context.Context) ([]server.Model, error)
	RegisterDeviceFn func(ctx context.Context, a server.Actor, d server.Device) error
	LookupDeviceFn   func(ctx context.Context, a server.Actor, serial string) (server.Device, error)
	LookupDeviceIDFn func(ctx context.Context, a server.Actor, deviceID string) (server.Device, error)
	NearMatchesFn    func(ctx context.Context, query string, n int) ([]string, error)
	CheckOwnerFn     func(ctx context.Context, a server.Actor, serial string, judge func(server.OwnerCheckFacts) server.OwnerVerdict) (bool, error)
	SetHoldFn        func(ctx context.Context, a server.Actor, serial string, h *server.Hold, releaseReason string) error
	IssueFn          func(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits, decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error)
	IssuancesFn      func(ctx context.Context, a server.Actor, serial string, before int64, limit int) ([]server.Issuance, error)
	AuditFn          func(ctx context.Context, e server.AuditEvent) error
	QueryAuditFn     func(ctx context.Context, a server.Actor, f server.AuditFilter) ([]server.AuditEvent, error)
	ExportAuditFn    func(ctx context.Context, a server.Actor, f server.AuditFilter, fn func(server.AuditEvent) error) error
	SummarizeAuditFn func(ctx context.Context, a server.Actor, from, to time.Time) (server.AuditSummary, error)
	BeginImportFn    func(ctx context.Context, a server.Actor, opts server.ImportOptions) (string, error)
	ImportBatchFn    func(ctx context.Context, a server.Actor, importID string, b server.ImportBatch, check func(server.ImportState) *server.Error) (server.ImportReport, error)
	FinishImportFn   func(ctx context.Context, a server.Actor, importID, sha256 string, check func(server.ImportState) *server.Error) (server.ImportReport, error)

	mu        sync.Mutex // the store's locks: every act is serialised
	codes     []*memOwnerCode
	mail      []*memMail
	models    []server.Model
	devices   map[string]*memDevice // by canonical serial
	issuances []server.Issuance     // in insert order
	events    []server.AuditEvent   // in insert order
	imports   map[string]*memImport
	approvals []*server.Approval // in insert order
}

var (
	_ server.Store         = (*memStore)(nil)
	_ server.ImportStore   = (*memStore)(nil)
	_ server.ApprovalStore = (*memStore)(nil)
)

// testModels is the catalogue the migrations seed, in part.
var testModels = []server.Model{
	{Code: "WBXHD041S", Channels: 4, Drives: 1, Description: "4-channel hybrid DVR"},
	{Code: "WBXHD082S2T", Channels: 8, Drives: 2, ShipsWithDrive: true, Description: "8-channel hybrid DVR with a 2 TB drive"},
}

func newMemStore(c *testClock) *memStore {
	return &memStore{clock: c, models: slices.Clone(testModels), devices: map[string]*memDevice{}, imports: map[string]*memImport{}}
}

// record appends e under mu, with the store's clock and the next id.
func (m *memStore) record(e server.AuditEvent) {
	e.ID = int64(len(m.events) + 1)
	if e.Time.IsZero() {
		e.Time = m.clock.Now()
	}
	m.events = append(m.events, e)
}

// event is an audit event of a's act.
func event(a server.Actor, act server.Action, o server.Outcome, serial string) server.AuditEvent {
	return server.AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr, Action: act, Outcome: o, Serial: serial}
}

// Events returns a copy of the audit events written so far.
func (m *memStore) Events() []server.AuditEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events)
}

// LastEvent returns the last audit event written, the zero event if none.
func (m *memStore) LastEvent() server.AuditEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return server.AuditEvent{}
	}
	return m.events[len(m.events)-1]
}

// put registers d directly, with its issuance state, bypassing the audit.
func (m *memStore) put(d server.Device, lastSequence int64, lastIssuedAt time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices[d.Serial] = &memDevice{Device: d, lastSequence: lastSequence, lastIssuedAt: lastIssuedAt}
}

// setHoldDirect places h on the device without an event (as an owner's
// UPDATE would in the PostgreSQL tests).
func (m *memStore) setHoldDirect(serial string, h *server.Hold) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.devices[serial].Hold = h
}

func notRegistered(s string) *server.Error {
	return &server.Error{Code: server.ENotFound, Reason: server.ReasonDeviceNotFound, Field: "serial",
		Message: "no device is registered under " + s}
}

// Models implements server.Store.
func (m *memStore) Models(ctx context.Context) ([]server.Model, error) {
	if m.ModelsFn != nil {
		return m.ModelsFn(ctx)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.models), nil
}

// RegisterDevice implements server.Store as server/postgres does: a
// canonical serial, a known model, no serial or device id registered
// already; refusals audited.
func (m *memStore) RegisterDevice(ctx context.Context, a server.Actor, d server.Device) error {
	if m.RegisterDeviceFn != nil {
		return m.RegisterDeviceFn(ctx, a, d)
	}
	s, err := serial.Parse(d.Serial)
	if err != nil || s.String() != d.Serial {
		return server.Invalid("serial", "expected a canonical serial, got %q", d.Serial)
	}
	if d.DeviceID == "" {
		d.DeviceID = s.DeviceID
	}
	if d.ProductionDate.IsZero() {
		d.ProductionDate = s.Date
	}
	if d.KeyGeneration == 0 {
		d.KeyGeneration = 1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := event(a, server.ActionRegister, server.OutcomeSuccess, d.Serial)
	e.Detail = "model=" + d.Model
	var refusal *server.Error
	switch {
	case !slices.ContainsFunc(m.models, func(x server.Model) bool { return x.Code == d.Model }):
		refusal = server.Invalid("model", "unknown model %q", d.Model)
	case m.devices[d.Serial] != nil || m.byDeviceID(d.DeviceID) != nil:
		refusal = &server.Error{Code: server.EConflict, Reason: server.ReasonDeviceExists, Field: "serial", Message: "a device with that serial or device id is already registered"}
	}
	if refusal != nil {
		e.Outcome, e.Detail = server.OutcomeRefused, string(refusal.Code)+" "+e.Detail
		m.record(e)
		return refusal
	}
	if d.RegisteredAt.IsZero() {
		d.RegisteredAt = m.clock.Now()
	}
	m.devices[d.Serial] = &memDevice{Device: d}
	m.record(e)
	return nil
}

func (m *memStore) byDeviceID(id string) *memDevice {
	for _, d := range m.devices {
		if d.DeviceID == id {
			return d
		}
	}
	return nil
}

// device returns the stored device as a lookup shows it (recent
// issuances counted), under mu.
func (m *memStore) device(d *memDevice) server.Device {
	out := d.Device
	if d.Hold != nil {
		h := *d.Hold
		out.Hold = &h
	}
	now := m.clock.Now()
	for _, iss := range m.issuances {
		if iss.Serial == d.Serial && iss.IssuedAt.After(now.Add(-24*time.Hour)) {
			out.RecentIssuances++
		}
	}
	return out
}

// LookupDevice implements server.Store.
func (m *memStore) LookupDevice(ctx context.Context, a server.Actor, s string) (server.Device, error) {
	if m.LookupDeviceFn != nil {
		return m.LookupDeviceFn(ctx, a, s)
	}
	return m.lookup(a, s, func() *memDevice { return m.devices[s] }, s, "by=serial")
}

// LookupDeviceID implements server.Store.
func (m *memStore) LookupDeviceID(ctx context.Context, a server.Actor, id string) (server.Device, error) {
	if m.LookupDeviceIDFn != nil {
		return m.LookupDeviceIDFn(ctx, a, id)
	}
	return m.lookup(a, id, func() *memDevice { return m.byDeviceID(id) }, "", "by=device_id query="+id)
}

func (m *memStore) lookup(a server.Actor, key string, find func() *memDevice, auditSerial, detail string) (server.Device, error) {
	m.mu.Lock()
	d := find()
	e := event(a, server.ActionLookup, server.OutcomeSuccess, auditSerial)
	e.Detail = detail
	if d == nil {
		e.Outcome, e.Detail = server.OutcomeRefused, "not_found "+detail
		m.record(e)
		m.mu.Unlock()
		near, _ := m.NearMatches(context.Background(), key, 5)
		return server.Device{}, &server.Error{Code: server.ENotFound, Field: "serial",
			Message: "no device is registered under " + key, NearMatches: near}
	}
	defer m.mu.Unlock()
	e.Serial = d.Serial
	m.record(e)
	return m.device(d), nil
}

// NearMatches implements server.Store: the serials whose device id is
// within three edits of the query's, closest first.
func (m *memStore) NearMatches(ctx context.Context, query string, n int) ([]string, error) {
	if m.NearMatchesFn != nil {
		return m.NearMatchesFn(ctx, query, n)
	}
	id := query
	if i := strings.LastIndexByte(id, '#'); i >= 0 {
		id = id[i+1:]
	}
	id = strings.ToUpper(strings.Join(strings.Fields(id), ""))
	if id == "" {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	type match struct {
		serial string
		dist   int
	}
	var ms []match
	for _, d := range m.devices {
		if dist := levenshtein(d.DeviceID, id); dist <= 3 {
			ms = append(ms, match{d.Serial, dist})
		}
	}
	slices.SortFunc(ms, func(a, b match) int {
		if a.dist != b.dist {
			return a.dist - b.dist
		}
		return strings.Compare(a.serial, b.serial)
	})
	var out []string
	for _, x := range ms[:min(n, len(ms))] {
		out = append(out, x.serial)
	}
	return out, nil
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev = cur
	}
	return prev[len(b)]
}

// CheckOwner implements server.Store.
func (m *memStore) CheckOwner(ctx context.Context, a server.Actor, s string, judge func(server.OwnerCheckFacts) server.OwnerVerdict) (bool, error) {
	if m.CheckOwnerFn != nil {
		return m.CheckOwnerFn(ctx, a, s, judge)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := event(a, server.ActionOwnerCheck, server.OutcomeRefused, s)
	d := m.devices[s]
	if d == nil {
		e.Detail = "not_found"
		m.record(e)
		return false, notRegistered(s)
	}
	v := judge(server.OwnerCheckFacts{Registered: d.OwnerContact, Misses: m.misses(a, s)})
	if v.Match {
		e.Outcome = server.OutcomeSuccess
	} else {
		e.Detail = v.Detail
	}
	m.record(e)
	if v.Refusal != nil {
		return false, v.Refusal
	}
	return v.Match, nil
}

// SetHold implements server.Store.
func (m *memStore) SetHold(ctx context.Context, a server.Actor, s string, h *server.Hold, releaseReason string) error {
	if m.SetHoldFn != nil {
		return m.SetHoldFn(ctx, a, s, h, releaseReason)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	act := server.ActionRelease
	if h != nil {
		act = server.ActionHold
	}
	e := event(a, act, server.OutcomeSuccess, s)
	d := m.devices[s]
	if d == nil {
		e.Outcome, e.Detail = server.OutcomeRefused, "not_found"
		m.record(e)
		return notRegistered(s)
	}
	if h == nil {
		e.Reason = releaseReason
		if d.Hold == nil {
			e.Detail = "not_on_hold"
		}
		d.Hold = nil
	} else {
		nh := *h
		if nh.By == "" {
			nh.By = a.Subject
		}
		if nh.Since.IsZero() {
			nh.Since = m.clock.Now()
		}
		e.Reason = h.Reason
		if d.Hold != nil {
			e.Detail = "replaced"
		}
		d.Hold = &nh
	}
	m.record(e)
	return nil
}

// Issue implements server.Store as server/postgres does: it reads the
// facts under the store's lock, asks decide, and writes what was decided.
func (m *memStore) Issue(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits,
	decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
	if m.IssueFn != nil {
		return m.IssueFn(ctx, a, req, lim, decide)
	}
	lim = lim.WithDefaults()
	m.mu.Lock()
	defer m.mu.Unlock()

	f := server.IssueFacts{Actor: a, Request: req, Limits: lim, Now: m.clock.Now().UTC()}
	for i := range m.issuances {
		if iss := m.issuances[i]; iss.Actor == a.Subject && iss.RequestID == req.RequestID {
			f.Existing = &iss
		}
	}
	if d := m.devices[req.Serial]; d != nil {
		f.Registered = true
		if d.Hold != nil {
			h := *d.Hold
			f.Hold = &h
		}
		f.LastSequence, f.LastIssuedAt, f.KeyGeneration = d.lastSequence, d.lastIssuedAt, d.KeyGeneration
		if d.lastIssuedAt.After(f.Now) { // issue times follow sequence numbers
			f.Now = d.lastIssuedAt
		}
	}
	inWindow := func(scope server.LimitScope) []time.Time {
		var ts []time.Time
		for _, iss := range m.issuances {
			switch {
			case scope == server.LimitPerDevice && iss.Serial == req.Serial && iss.IssuedAt.After(f.Now.Add(-lim.PerDeviceWindow)),
				scope == server.LimitPerAgent && iss.Actor == a.Subject && iss.IssuedAt.After(f.Now.Add(-lim.PerAgentWindow)):
				ts = append(ts, iss.IssuedAt)
			}
		}
		slices.SortFunc(ts, time.Time.Compare)
		return ts
	}
	f.DeviceCount, f.AgentCount = len(inWindow(server.LimitPerDevice)), len(inWindow(server.LimitPerAgent))
	for _, e := range m.events {
		if e.Serial == req.Serial && e.Actor == a.Subject && e.Action == server.ActionOwnerCheck &&
			e.Outcome == server.OutcomeSuccess && e.Time.After(f.Now.Add(-time.Hour)) {
			f.OwnerChecked = true
		}
		if e.Serial == req.Serial && e.Action == server.ActionContactChange && e.Outcome == server.OutcomeSuccess && e.Time.After(f.ContactChangedAt) {
			f.ContactChangedAt = e.Time
		}
	}
	m.issueOwnerFacts(&f)
	f.InWindow = func(scope server.LimitScope, n int) (time.Time, error) {
		ts := inWindow(scope)
		if n = max(n, 0); n >= len(ts) {
			return time.Time{}, nil
		}
		return ts[n], nil
	}

	d, err := decide(f)
	if err != nil {
		return server.Issuance{}, asError(err, "issuing a temporary password")
	}
	switch {
	case d.Refusal != nil:
		m.record(d.Event)
		return server.Issuance{}, d.Refusal
	case d.Replay:
		if f.Existing == nil {
			return server.Issuance{}, server.Internal(errors.New("memstore: a replay decided without an earlier issuance"), "issuing")
		}
		m.record(d.Event)
		return *f.Existing, nil
	}
	iss := d.Issuance
	if iss.Serial != req.Serial || iss.RequestID != req.RequestID || iss.Sequence != f.LastSequence+1 ||
		!iss.IssuedAt.Equal(f.Now) || iss.ID == "" || iss.SigningKeyID == "" || iss.KeyGeneration < 1 || iss.ExpiresAt.IsZero() {
		return server.Issuance{}, server.Internal(fmt.Errorf("memstore: decided issuance %+v does not fit the facts", iss), "issuing")
	}
	if iss.ExpiresAt.Sub(iss.IssuedAt) > 24*time.Hour { // the database's CHECK
		return server.Issuance{}, &server.Error{Code: server.EInvalid, Field: "expires_at", Message: "an issuance lives at most 24 hours"}
	}
	dev := m.devices[req.Serial]
	dev.lastSequence, dev.lastIssuedAt = iss.Sequence, iss.IssuedAt
	m.issuances = append(m.issuances, iss)
	m.spend(d, iss)
	m.record(d.Event)
	return iss, nil
}

// asError passes an *server.Error through and wraps anything else, as
// server/postgres's translate does.
func asError(err error, what string) error {
	var se *server.Error
	if errors.As(err, &se) {
		return err
	}
	return server.Internal(err, what)
}

// Issuances implements server.Store.
func (m *memStore) Issuances(ctx context.Context, a server.Actor, s string, before int64, limit int) ([]server.Issuance, error) {
	if m.IssuancesFn != nil {
		return m.IssuancesFn(ctx, a, s, before, limit)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := event(a, server.ActionListIssuances, server.OutcomeSuccess, s)
	if m.devices[s] == nil {
		e.Outcome, e.Detail = server.OutcomeRefused, "not_found"
		m.record(e)
		return nil, notRegistered(s)
	}
	var out []server.Issuance
	for _, iss := range m.issuances {
		if iss.Serial == s && (before == 0 || iss.Sequence < before) {
			out = append(out, iss)
		}
	}
	slices.SortFunc(out, func(x, y server.Issuance) int { return int(y.Sequence - x.Sequence) })
	m.record(e)
	return out[:min(limit, len(out))], nil
}

// Audit implements server.Store.
func (m *memStore) Audit(ctx context.Context, e server.AuditEvent) error {
	if m.AuditFn != nil {
		return m.AuditFn(ctx, e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record(e)
	return nil
}

func matches(f server.AuditFilter, e server.AuditEvent) bool {
	return (f.Serial == "" || e.Serial == f.Serial) && (f.Actor == "" || e.Actor == f.Actor) &&
		(f.Action == "" || e.Action == f.Action) && (f.Outcome == "" || e.Outcome == f.Outcome) &&
		(f.From.IsZero() || !e.Time.Before(f.From)) && (f.To.IsZero() || e.Time.Before(f.To)) &&
		!(f.HideAuditorReads && e.AuditorRead())
}

// QueryAudit implements server.Store: newest first, audited.
func (m *memStore) QueryAudit(ctx context.Context, a server.Actor, f server.AuditFilter) ([]server.AuditEvent, error) {
	if m.QueryAuditFn != nil {
		return m.QueryAuditFn(ctx, a, f)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []server.AuditEvent
	for i := len(m.events) - 1; i >= 0 && len(out) < f.Limit; i-- {
		if e := m.events[i]; matches(f, e) && (f.AfterID == 0 || e.ID < f.AfterID) {
			out = append(out, e)
		}
	}
	e := event(a, server.ActionAuditQuery, server.OutcomeSuccess, f.Serial)
	e.Detail = fmt.Sprintf("limit=%d", f.Limit)
	m.record(e)
	return out, nil
}

// ExportAudit implements server.Store: the export is recorded first, then
// the events go out oldest first.
func (m *memStore) ExportAudit(ctx context.Context, a server.Actor, f server.AuditFilter, fn func(server.AuditEvent) error) error {
	if m.ExportAuditFn != nil {
		return m.ExportAuditFn(ctx, a, f, fn)
	}
	m.mu.Lock()
	m.record(event(a, server.ActionAuditExport, server.OutcomeSuccess, f.Serial))
	evs := slices.Clone(m.events)
	m.mu.Unlock()
	for _, e := range evs {
		if matches(f, e) {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// SummarizeAudit implements server.Store, counting successful issuances
// per actor and day and refusals per action and first word of the detail.
func (m *memStore) SummarizeAudit(ctx context.Context, a server.Actor, from, to time.Time) (server.AuditSummary, error) {
	if m.SummarizeAuditFn != nil {
		return m.SummarizeAuditFn(ctx, a, from, to)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := server.AuditSummary{From: from, To: to}
	f := server.AuditFilter{From: from, To: to}
	for _, e := range m.events {
		if !matches(f, e) {
			continue
		}
		switch {
		case e.Action == server.ActionIssue && e.Outcome == server.OutcomeSuccess:
			day := e.Time.UTC().Truncate(24 * time.Hour)
			i := slices.IndexFunc(out.PerAgentDay, func(c server.AgentDayCount) bool { return c.Day.Equal(day) && c.Actor == e.Actor })
			if i < 0 {
				out.PerAgentDay = append(out.PerAgentDay, server.AgentDayCount{Day: day, Actor: e.Actor})
				i = len(out.PerAgentDay) - 1
			}
			out.PerAgentDay[i].Count++
			if strings.Contains(e.Detail, "override") {
				out.PerAgentDay[i].Overrides++
			}
		case e.Outcome == server.OutcomeRefused:
			reason, _, _ := strings.Cut(e.Detail, " ")
			i := slices.IndexFunc(out.Refusals, func(c server.RefusalCount) bool { return c.Action == e.Action && c.Reason == reason })
			if i < 0 {
				out.Refusals = append(out.Refusals, server.RefusalCount{Action: e.Action, Reason: reason})
				i = len(out.Refusals) - 1
			}
			out.Refusals[i].Count++
		}
	}
	m.record(event(a, server.ActionAuditSummary, server.OutcomeSuccess, ""))
	return out, nil
}

// BeginImport implements server.ImportStore.
func (m *memStore) BeginImport(ctx context.Context, a server.Actor, opts server.ImportOptions) (string, error) {
	if m.BeginImportFn != nil {
		return m.BeginImportFn(ctx, a, opts)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	id := server.NewUUID()
	m.imports[id] = &memImport{actor: a.Subject, opts: opts, batches: map[int]server.ImportReport{}}
	return id, nil
}

// ImportBatch implements server.ImportStore as server/postgres does: new
// devices inserted with the import's id and line, the others as
// server.JudgeImportMatch decides (a device an earlier line of this import
// wrote makes the row a duplicate), a batch seen before not applied again.
func (m *memStore) ImportBatch(ctx context.Context, a server.Actor, importID string, b server.ImportBatch, check func(server.ImportState) *server.Error) (server.ImportReport, error) {
	if m.ImportBatchFn != nil {
		return m.ImportBatchFn(ctx, a, importID, b, check)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	imp := m.imports[importID]
	if imp == nil {
		return server.ImportReport{}, server.Errorf(server.ENotFound, "no import %s", importID)
	}
	if e := check(server.ImportState{Actor: imp.actor, Finished: imp.finished}); e != nil {
		return server.ImportReport{}, e
	}
	if rep, done := imp.batches[b.Seq]; done {
		return rep, nil
	}
	rep := server.ImportReport{ImportID: importID, Batches: 1, Received: len(b.Rows) + b.Invalid + b.Duplicates,
		Invalid: b.Invalid, Duplicates: b.Duplicates}
	// lineOf is the line of this import that wrote d, 0 when none did.
	lineOf := func(d *memDevice) int {
		if d.ImportID == importID {
			return d.ImportLine
		}
		return 0
	}
	for _, r := range b.Rows {
		var match server.ImportMatch
		d := m.devices[r.Serial]
		if d == nil {
			other := m.byDeviceID(r.DeviceID)
			if other == nil {
				nd := r.Device
				nd.RegisteredAt = m.clock.Now()
				nd.ImportID, nd.ImportLine = importID, r.Line
				m.devices[nd.Serial] = &memDevice{Device: nd}
				rep.Inserted++
				continue
			}
			match = server.ImportMatch{OtherSerial: other.Serial, Line: lineOf(other)}
		} else {
			match = server.ImportMatch{Found: true, Line: lineOf(d),
				Registered: server.RegisteredRow{Model: d.Model, Firmware: d.Firmware, OwnerContact: d.OwnerContact, Held: d.Hold != nil}}
		}
		v := server.JudgeImportMatch(match, r, imp.opts.Update)
		switch {
		case v.Duplicate != "":
			rep.Duplicates++
			rep.AddError(server.RowError{Line: r.Line, Serial: r.Serial, Kind: server.RowDuplicate, Reason: v.Duplicate})
			continue
		case v.Write:
			d.Model, d.Firmware = r.Model, r.Firmware
			if r.OwnerContact != "" {
				d.OwnerContact = r.OwnerContact
			}
			d.ImportID, d.ImportLine = importID, r.Line
			rep.Updated++
			e := event(a, server.ActionImportUpdate, server.OutcomeSuccess, r.Serial)
			e.RequestID, e.Detail = importID, v.Detail
			m.record(e)
			if v.ContactChange {
				e := event(a, server.ActionContactChange, server.OutcomeSuccess, r.Serial)
				e.RequestID, e.Detail = importID, v.ContactDetail
				m.record(e)
			}
			continue
		case v.Detail != "":
			e := event(a, server.ActionImportUpdate, server.OutcomeRefused, r.Serial)
			e.RequestID, e.Detail = importID, v.Detail
			m.record(e)
		}
		if v.Conflict == "" {
			rep.Unchanged++
			continue
		}
		rep.Conflicts++
		rep.AddError(server.RowError{Line: r.Line, Serial: r.Serial, Kind: server.RowConflict, Reason: v.Conflict})
	}
	e := event(a, server.ActionImportBatch, server.OutcomeSuccess, "")
	e.RequestID, e.Detail = importID, fmt.Sprintf("seq=%d %s", b.Seq, rep.Summary())
	m.record(e)
	stored := rep
	stored.Errors = nil
	imp.batches[b.Seq] = stored
	return rep, nil
}

// FinishImport implements server.ImportStore.
func (m *memStore) FinishImport(ctx context.Context, a server.Actor, importID, sha256 string, check func(server.ImportState) *server.Error) (server.ImportReport, error) {
	if m.FinishImportFn != nil {
		return m.FinishImportFn(ctx, a, importID, sha256, check)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	imp := m.imports[importID]
	if imp == nil {
		return server.ImportReport{}, server.Errorf(server.ENotFound, "no import %s", importID)
	}
	if e := check(server.ImportState{Actor: imp.actor, Finished: imp.finished}); e != nil {
		return server.ImportReport{}, e
	}
	imp.finished = true
	rep := server.ImportReport{ImportID: importID, SHA256: sha256}
	for _, b := range imp.batches {
		rep.Received += b.Received
		rep.Inserted += b.Inserted
		rep.Updated += b.Updated
		rep.Unchanged += b.Unchanged
		rep.Conflicts += b.Conflicts
		rep.Duplicates += b.Duplicates
		rep.Invalid += b.Invalid
		rep.Batches += b.Batches
	}
	e := event(a, server.ActionImport, server.OutcomeSuccess, "")
	e.RequestID, e.Detail = importID, fmt.Sprintf("sha256=%s %s update=%t", sha256, rep.Summary(), imp.opts.Update)
	m.record(e)
	return rep, nil
}

// fakeAuditLog implements server.AuditLog with canned answers.
type fakeAuditLog struct {
	VerifyFn           func(ctx context.Context, external []byte) (server.AuditReport, error)
	LatestCheckpointFn func(ctx context.Context) (server.AuditCheckpoint, bool, error)
}

func (l *fakeAuditLog) Verify(ctx context.Context, external []byte) (server.AuditReport, error) {
	if l.VerifyFn != nil {
		return l.VerifyFn(ctx, external)
	}
	return server.AuditReport{Events: 10, Sealed: 9, Unsealed: 1, Checkpoints: 2, Head: "ab"}, nil
}

func (l *fakeAuditLog) LatestCheckpoint(ctx context.Context) (server.AuditCheckpoint, bool, error) {
	if l.LatestCheckpointFn != nil {
		return l.LatestCheckpointFn(ctx)
	}
	return server.AuditCheckpoint{Text: "checkpoint", Size: 9, Head: "ab", KID: "audit-1"}, true, nil
}

// approval returns the stored approval id, nil when none, under mu.
func (m *memStore) approval(id string) *server.Approval {
	for _, ap := range m.approvals {
		if ap.ID == id {
			return ap
		}
	}
	return nil
}

// CreateApproval implements server.ApprovalStore as server/postgres does:
// one approval per requester and request id, the event in the same act.
func (m *memStore) CreateApproval(ctx context.Context, ap server.Approval, ttl time.Duration, ev server.AuditEvent) (server.Approval, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.approvals {
		if x.Requester == ap.Requester && x.Request.RequestID == ap.Request.RequestID {
			return *x, false, nil
		}
	}
	if m.devices[ap.Request.Serial] == nil {
		return server.Approval{}, false, notRegistered(ap.Request.Serial)
	}
	now := m.clock.Now().UTC()
	ap.State, ap.CreatedAt, ap.ExpiresAt = server.ApprovalPending, now, now.Add(ttl)
	m.approvals = append(m.approvals, &ap)
	m.record(ev)
	return ap, true, nil
}

// Approval implements server.ApprovalStore.
func (m *memStore) Approval(ctx context.Context, id string) (server.Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ap := m.approval(id); ap != nil {
		return *ap, nil
	}
	return server.Approval{}, &server.Error{Code: server.ENotFound, Message: "no such approval"}
}

// PendingApprovals implements server.ApprovalStore.
func (m *memStore) PendingApprovals(ctx context.Context, limit int) ([]server.Approval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []server.Approval
	for _, ap := range m.approvals {
		if ap.State == server.ApprovalPending && len(out) < limit {
			out = append(out, *ap)
		}
	}
	return out, nil
}

// apply writes decision d about ap at now, under mu.
func (m *memStore) apply(ap *server.Approval, d server.ApprovalDecision, now time.Time) {
	for _, ev := range d.Events {
		m.record(ev)
	}
	if d.State == "" {
		return
	}
	ap.State = d.State
	if d.DecidedBy != "" {
		ap.DecidedBy, ap.DecidedAt, ap.Comment = d.DecidedBy, now, d.Comment
	}
}

// DecideApproval implements server.ApprovalStore.
func (m *memStore) DecideApproval(ctx context.Context, id string, decide func(server.Approval, time.Time) server.ApprovalDecision) (server.Approval, server.ApprovalDecision, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ap := m.approval(id)
	if ap == nil {
		return server.Approval{}, server.ApprovalDecision{}, &server.Error{Code: server.ENotFound, Message: "no such approval"}
	}
	now := m.clock.Now().UTC()
	d := decide(*ap, now)
	m.apply(ap, d, now)
	return *ap, d, nil
}

// ExpireApprovals implements server.ApprovalStore.
func (m *memStore) ExpireApprovals(ctx context.Context, decide func(server.Approval, time.Time) (server.ApprovalDecision, bool)) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, n := m.clock.Now().UTC(), 0
	for _, ap := range m.approvals {
		if ap.State != server.ApprovalPending || now.Before(ap.ExpiresAt) {
			continue
		}
		if d, ok := decide(*ap, now); ok {
			m.apply(ap, d, now)
			n++
		}
	}
	return n, nil
}

// LinkApprovalIssuance implements server.ApprovalStore.
func (m *memStore) LinkApprovalIssuance(ctx context.Context, id, issuanceID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ap := m.approval(id)
	if ap == nil || ap.State != server.ApprovalGranted || (ap.IssuanceID != "" && ap.IssuanceID != issuanceID) {
		return server.Internal(fmt.Errorf("memstore: approval %s cannot take issuance %s", id, issuanceID), "linking an approval")
	}
	ap.IssuanceID = issuanceID
	return nil
}

// ApprovedIssuance implements server.ApprovalStore.
func (m *memStore) ApprovedIssuance(ctx context.Context, id string, decide func(server.RevealFacts) (server.AuditEvent, *server.Error)) (server.Issuance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ap := m.approval(id)
	if ap == nil {
		return server.Issuance{}, &server.Error{Code: server.ENotFound, Message: "no such approval"}
	}
	var iss *server.Issuance
	for i := range m.issuances {
		if m.issuances[i].ID == ap.IssuanceID {
			iss = &m.issuances[i]
		}
	}
	f := server.RevealFacts{Approval: *ap, Issuance: iss, Now: m.clock.Now()}
	if d := m.devices[ap.Request.Serial]; d != nil {
		f.Hold = d.Hold
	}
	ev, refusal := decide(f)
	m.record(ev)
	if refusal != nil {
		return server.Issuance{}, refusal
	}
	return *iss, nil
}
