package server_test

// Tests of server.Service's device acts (RegisterDevice, LookupDevice,
// CheckOwner, HoldDevice, ReleaseDevice, Issuances, GrantJWKS, Authorize)
// against the in-memory store: the role policy, validation, and the audit
// event of every refusal the service decides. The shared test environment
// (newEnv) is here too.

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
)

const (
	serialA = "JZ6OES#2017-08-01#3#DVR1101134C08011"
	serialB = "JZ6OES#2017-08-01#3#DVR1101134C08012"
	serialC = "JZ6OES#2017-08-01#3#DVR2202245D19122"
	// unknownSerial is one typing mistake away from serialA's device id.
	unknownSerial = "JZ6OES#2017-08-01#3#DVR1101134C08019"
)

var (
	// start is the test clock's first reading: two minutes into a
	// 10-minute slot, after the voice code's epoch.
	start = time.Date(2024, 5, 1, 10, 2, 0, 0, time.UTC)

	agentA      = server.Actor{Subject: "alice", Role: server.RoleAgent, ClientAddr: "192.0.2.1:50000"}
	agentB      = server.Actor{Subject: "bob", Role: server.RoleAgent}
	agentC      = server.Actor{Subject: "carol", Role: server.RoleAgent}
	supervisor  = server.Actor{Subject: "sue", Role: server.RoleSupervisor}
	auditor     = server.Actor{Subject: "audrey", Role: server.RoleAuditor}
	provisioner = server.Actor{Subject: "pat", Role: server.RoleProvisioner}
)

// env is a Service on an in-memory store and a real keyring in a temp dir.
type env struct {
	ctx   context.Context
	clock *testClock
	store *memStore
	keys  *keyring.Keyring
	svc   *server.Service
}

// testLimits are the PostgreSQL tests' limits: two codes per device per
// day, three per agent per hour.
var testLimits = server.Limits{PerDevice: 2, PerDeviceWindow: 24 * time.Hour, PerAgent: 3, PerAgentWindow: time.Hour}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	kr, err := keyring.Init(filepath.Join(tb.TempDir(), "keys"))
	if err != nil {
		tb.Fatal(err)
	}
	c := &testClock{t: start}
	st := newMemStore(c)
	svc := server.NewService(st, kr)
	svc.Now, svc.Logger, svc.Limits = c.Now, slog.New(slog.DiscardHandler), testLimits
	svc.Approvals = st
	return &env{ctx: context.Background(), clock: c, store: st, keys: kr, svc: svc}
}

// register puts a device under the keyring's current generation.
func (e *env) register(serial, contact string) {
	e.registerGen(serial, contact, e.keys.CurrentGeneration())
}

func (e *env) registerGen(serial, contact string, gen int) {
	id := serial[strings.LastIndexByte(serial, '#')+1:]
	e.store.put(server.Device{Serial: serial, DeviceID: id, Model: "WBXHD082S2T", Firmware: "V3.1.0",
		OwnerContact: contact, KeyGeneration: gen, ProductionDate: time.Date(2017, 8, 1, 0, 0, 0, 0, time.UTC),
		RegisteredAt: start.Add(-time.Hour)}, 0, time.Time{})
}

// wantCode fails unless err is a *server.Error with code c, and returns it.
func wantCode(tb testing.TB, err error, c server.Code) *server.Error {
	tb.Helper()
	var se *server.Error
	if !errors.As(err, &se) {
		tb.Fatalf("error %v (%T), want a *server.Error with code %s", err, err, c)
	}
	if se.Code != c {
		tb.Fatalf("code %s (%v), want %s", se.Code, se, c)
	}
	return se
}

// wantEvent fails unless ev has the action, outcome and detail.
func wantEvent(tb testing.TB, ev server.AuditEvent, act server.Action, o server.Outcome, detail string) {
	tb.Helper()
	if ev.Action != act || ev.Outcome != o || ev.Detail != detail {
		tb.Errorf("event %s/%s %q, want %s/%s %q (%+v)", ev.Action, ev.Outcome, ev.Detail, act, o, detail, ev)
	}
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		name  string
		actor server.Actor
		act   server.Action
		ok    bool
	}{
		{"allowed/agent-issues", agentA, server.ActionIssue, true},
		{"allowed/supervisor-holds", supervisor, server.ActionHold, true},
		{"allowed/supervisor-reads-the-audit-log", supervisor, server.ActionAuditQuery, true},
		{"allowed/auditor-verifies", auditor, server.ActionAuditVerify, true},
		{"allowed/provisioner-imports", provisioner, server.ActionImport, true},
		{"refused/auditor-may-not-issue", auditor, server.ActionIssue, false},
		{"refused/agent-may-not-hold", agentA, server.ActionHold, false},
		{"refused/agent-may-not-read-the-audit-log", agentA, server.ActionAuditExport, false},
		{"refused/provisioner-may-not-look-up", provisioner, server.ActionLookup, false},
		{"refused/nobody-may-do-an-unknown-act", supervisor, server.Action("device.melt"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			err := e.svc.Authorize(e.ctx, tt.actor, tt.act)
			if tt.ok {
				if err != nil || len(e.store.Events()) != 0 {
					t.Fatalf("Authorize = %v, events %+v", err, e.store.Events())
				}
				return
			}
			se := wantCode(t, err, server.EPermission)
			if se.ReasonOf() != server.ReasonRoleNotAllowed || !strings.Contains(se.Message, string(tt.actor.Role)) {
				t.Errorf("refusal %+v", se)
			}
			ev := e.store.LastEvent()
			wantEvent(t, ev, tt.act, server.OutcomeRefused, "permission_denied")
			if ev.Actor != tt.actor.Subject || ev.Role != tt.actor.Role || ev.ClientAddr != tt.actor.ClientAddr {
				t.Errorf("event attributed to %q %q %q", ev.Actor, ev.Role, ev.ClientAddr)
			}
		})
	}
	t.Run("refused/unauthenticated-gets-no-event", func(t *testing.T) {
		e := newEnv(t)
		for _, a := range []server.Actor{{}, {Subject: "mallory"}, {Subject: "mallory", Role: "root"}} {
			wantCode(t, e.svc.Authorize(e.ctx, a, server.ActionIssue), server.EPermission)
			if _, err := e.svc.LookupDevice(e.ctx, a, serialA); err == nil {
				t.Fatalf("%+v looked a device up", a)
			}
		}
		if evs := e.store.Events(); len(evs) != 0 {
			t.Errorf("events for unauthenticated actors: %+v", evs)
		}
	})
	t.Run("refused/audit-failure-does-not-lift-the-refusal", func(t *testing.T) {
		e := newEnv(t)
		e.store.AuditFn = func(context.Context, server.AuditEvent) error { return errors.New("disk full") }
		wantCode(t, e.svc.Authorize(e.ctx, auditor, server.ActionIssue), server.EPermission)
	})
}

func TestRegisterDevice(t *testing.T) {
	good := server.NewDevice{Serial: serialA, Model: "WBXHD082S2T", OwnerContact: "Jane@Example.com", Firmware: " V3.1.0 "}
	tests := []struct {
		name    string
		actor   server.Actor
		mod     func(*server.NewDevice)
		setup   func(*env)
		code    server.Code // "" for success
		field   string
		detail  string // of the last event
		message string // a part of the error message
	}{
		{name: "allowed/current-key-generation", detail: "model=WBXHD082S2T"},
		{name: "allowed/sloppy-serial-and-model", mod: func(d *server.NewDevice) {
			d.Serial, d.Model = " jz6oes#2017-08-01#03#dvr1101134c08011 ", " wbxhd082s2t"
		}, detail: "model=WBXHD082S2T"},
		{name: "allowed/phone-contact", mod: func(d *server.NewDevice) { d.OwnerContact = "0044 7700 900789" }, detail: "model=WBXHD082S2T"},
		{name: "allowed/older-key-generation", setup: func(e *env) { e.keys.Rotate("master") },
			mod: func(d *server.NewDevice) { d.KeyGeneration = 1 }, detail: "model=WBXHD082S2T"},
		{name: "refused/agent-may-not-register", actor: agentA, code: server.EPermission, detail: "permission_denied"},
		{name: "invalid/serial", mod: func(d *server.NewDevice) { d.Serial = "JZ6OES#2017-08-01#3" },
			code: server.EInvalid, field: "serial", detail: "invalid:serial", message: "four fields"},
		{name: "invalid/serial-date-part", mod: func(d *server.NewDevice) { d.Serial = "JZ6OES#2017-13-01#3#DVR1101134C08011" },
			code: server.EInvalid, field: "serial", detail: "invalid:serial", message: "bad date"},
		{name: "invalid/unknown-model", mod: func(d *server.NewDevice) { d.Model = "WBX999" },
			code: server.EInvalid, field: "model", detail: "invalid:model", message: "WBXHD041S, WBXHD082S2T"},
		{name: "invalid/owner-contact", mod: func(d *server.NewDevice) { d.OwnerContact = "call me" },
			code: server.EInvalid, field: "owner_contact", detail: "invalid:owner_contact"},
		{name: "invalid/firmware-too-long", mod: func(d *server.NewDevice) { d.Firmware = strings.Repeat("V", 65) },
			code: server.EInvalid, field: "firmware", detail: "invalid:firmware"},
		{name: "invalid/firmware-with-control-characters", mod: func(d *server.NewDevice) { d.Firmware = "V3\x00" },
			code: server.EInvalid, field: "firmware", detail: "invalid:firmware"},
		{name: "invalid/firmware-not-utf8", mod: func(d *server.NewDevice) { d.Firmware = "V3\xff" },
			code: server.EInvalid, field: "firmware", detail: "invalid:firmware"},
		{name: "invalid/key-generation-beyond-current", mod: func(d *server.NewDevice) { d.KeyGeneration = 2 },
			code: server.EInvalid, field: "key_generation", detail: "invalid:key_generation"},
		{name: "invalid/key-generation-negative", mod: func(d *server.NewDevice) { d.KeyGeneration = -1 },
			code: server.EInvalid, field: "key_generation", detail: "invalid:key_generation"},
		{name: "conflict/already-registered", setup: func(e *env) { e.register(serialA, "") },
			code: server.EConflict, detail: "conflict model=WBXHD082S2T"},
		{name: "internal/model-catalogue-unreadable", setup: func(e *env) {
			e.store.ModelsFn = func(context.Context) ([]server.Model, error) { return nil, errors.New("connection reset") }
		}, code: server.EInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			in := good
			if tt.mod != nil {
				tt.mod(&in)
			}
			a := provisioner
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			v, err := e.svc.RegisterDevice(e.ctx, a, in)
			if tt.detail != "" {
				ev := e.store.LastEvent()
				o := server.OutcomeRefused
				if tt.code == "" {
					o = server.OutcomeSuccess
				}
				wantEvent(t, ev, server.ActionRegister, o, tt.detail)
				if tt.code != server.EInvalid || tt.field != "serial" {
					if ev.Serial != serialA {
						t.Errorf("event serial %q", ev.Serial)
					}
				}
			}
			if tt.code != "" {
				se := wantCode(t, err, tt.code)
				if se.Field != tt.field && tt.field != "" || !strings.Contains(se.Message, tt.message) {
					t.Errorf("field %q message %q, want %q containing %q", se.Field, se.Message, tt.field, tt.message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := v.Device
			wantGen := e.keys.CurrentGeneration()
			if in.KeyGeneration != 0 {
				wantGen = in.KeyGeneration
			}
			if d.Serial != serialA || d.DeviceID != "DVR1101134C08011" || d.Model != "WBXHD082S2T" || d.Firmware != "V3.1.0" ||
				d.KeyGeneration != wantGen || !d.ProductionDate.Equal(time.Date(2017, 8, 1, 0, 0, 0, 0, time.UTC)) || !d.RegisteredAt.Equal(start) {
				t.Errorf("registered %+v", d)
			}
			if strings.Contains(d.OwnerContact, "jane") || strings.Contains(d.OwnerContact, "7700") || d.OwnerContact == "" {
				t.Errorf("owner contact %q not masked", d.OwnerContact)
			}
			if v.ModelInfo.Channels != 8 || v.PerDeviceLimit != testLimits.PerDevice {
				t.Errorf("view %+v", v)
			}
			stored, _ := e.store.LookupDevice(e.ctx, agentA, serialA)
			if stored.OwnerContact != server.NormaliseContact(in.OwnerContact) || stored.KeyGeneration != wantGen {
				t.Errorf("stored %+v", stored)
			}
		})
	}
}

func TestLookupDevice(t *testing.T) {
	const qrURL = "https://dvr.example/r?sn=JZ6OES%232017-08-01%233%23DVR1101134C08011"
	tests := []struct {
		name   string
		actor  server.Actor
		query  string
		setup  func(*env)
		code   server.Code
		field  string
		near   []string
		events []string // "action outcome detail" of the events written
	}{
		{name: "found/serial", query: serialA, events: []string{"device.lookup success by=serial"}},
		{name: "found/sloppy-serial", query: " jz6oes#2017-08-01#3#dvr1101134c08011", events: []string{"device.lookup success by=serial"}},
		{name: "found/device-id", query: "dvr1101134c08011", events: []string{"device.lookup success by=device_id query=DVR1101134C08011"}},
		{name: "found/qr-sn-prefix", query: "SN:" + serialA, events: []string{"device.lookup success by=serial"}},
		{name: "found/qr-url", query: qrURL, events: []string{"device.lookup success by=serial"}},
		{name: "not-found/serial-with-near-matches", query: unknownSerial, code: server.ENotFound, field: "serial",
			near: []string{serialA, serialB}, events: []string{"device.lookup refused not_found by=serial"}},
		{name: "not-found/device-id-with-near-matches", query: "DVR2202245D19123", code: server.ENotFound,
			near: []string{serialC}, events: []string{"device.lookup refused not_found by=device_id query=DVR2202245D19123"}},
		{name: "not-found/store-gives-none-the-service-adds-them", query: unknownSerial, setup: func(e *env) {
			e.store.LookupDeviceFn = func(context.Context, server.Actor, string) (server.Device, error) {
				return server.Device{}, server.Errorf(server.ENotFound, "no such device")
			}
		}, code: server.ENotFound, near: []string{serialA, serialB}},
		{name: "not-found/near-matches-fail", query: unknownSerial, setup: func(e *env) {
			e.store.LookupDeviceFn = func(context.Context, server.Actor, string) (server.Device, error) {
				return server.Device{}, server.Errorf(server.ENotFound, "no such device")
			}
			e.store.NearMatchesFn = func(context.Context, string, int) ([]string, error) { return nil, errors.New("timeout") }
		}, code: server.ENotFound},
		{name: "unavailable/store-error-passes-through", query: "DVR1101134C08011", setup: func(e *env) {
			e.store.LookupDeviceIDFn = func(context.Context, server.Actor, string) (server.Device, error) {
				return server.Device{}, server.Errorf(server.EUnavailable, "busy")
			}
		}, code: server.EUnavailable},
		{name: "invalid/malformed-query-names-the-field", query: "hello", code: server.EInvalid, field: "query",
			events: []string{"device.lookup refused invalid:query"}},
		{name: "invalid/bad-line-in-serial", query: "JZ6OES#2017-08-01#x#DVR1101134C08011", code: server.EInvalid, field: "query",
			events: []string{"device.lookup refused invalid:query"}},
		{name: "refused/auditor-may-not-look-up", actor: auditor, query: serialA, code: server.EPermission,
			events: []string{"device.lookup refused permission_denied"}},
		{name: "internal/model-catalogue-unreadable", query: serialA, setup: func(e *env) {
			e.store.ModelsFn = func(context.Context) ([]server.Model, error) { return nil, errors.New("connection reset") }
		}, code: server.EInternal, events: []string{"device.lookup success by=serial"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "+44 7700 900789")
			e.register(serialB, "")
			e.register(serialC, "")
			if tt.setup != nil {
				tt.setup(e)
			}
			a := agentA
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			v, err := e.svc.LookupDevice(e.ctx, a, tt.query)
			var got []string
			for _, ev := range e.store.Events() {
				got = append(got, string(ev.Action)+" "+string(ev.Outcome)+" "+ev.Detail)
			}
			if strings.Join(got, "\n") != strings.Join(tt.events, "\n") {
				t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.events, "\n"))
			}
			if tt.code != "" {
				se := wantCode(t, err, tt.code)
				if tt.field != "" && se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				if strings.Join(se.NearMatches, ",") != strings.Join(tt.near, ",") {
					t.Errorf("near matches %q, want %q", se.NearMatches, tt.near)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Device.Serial != serialA || v.Device.OwnerContact != "+**********89" || v.ModelInfo.Code != "WBXHD082S2T" ||
				v.ModelInfo.Channels != 8 || v.PerDeviceLimit != 2 {
				t.Errorf("view %+v", v)
			}
		})
	}

	t.Run("found/counts-recent-issuances-and-shows-a-hold", func(t *testing.T) {
		e := newEnv(t)
		e.register(serialA, "")
		for _, a := range []server.Actor{agentA, agentB} {
			if _, err := e.svc.Issue(e.ctx, a, issueRequest(serialA)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.HoldDevice(e.ctx, supervisor, serialA, "reported stolen"); err != nil {
			t.Fatal(err)
		}
		v, err := e.svc.LookupDevice(e.ctx, agentA, serialA)
		if err != nil || v.RecentIssuances != 2 || v.Device.Hold == nil || v.Device.Hold.Reason != "reported stolen" {
			t.Fatalf("LookupDevice = %+v, %v", v, err)
		}
	})
	t.Run("found/model-missing-from-the-catalogue", func(t *testing.T) {
		e := newEnv(t)
		e.store.put(server.Device{Serial: serialA, DeviceID: "DVR1101134C08011", Model: "RETIRED1", KeyGeneration: 1}, 0, time.Time{})
		v, err := e.svc.LookupDevice(e.ctx, agentA, serialA)
		if err != nil || v.ModelInfo.Code != "RETIRED1" || v.ModelInfo.Channels != 0 {
			t.Fatalf("LookupDevice = %+v, %v", v, err)
		}
	})
}

func TestCheckOwner(t *testing.T) {
	tests := []struct {
		name            string
		actor           server.Actor
		query, claimed  string
		setup           func(*env)
		match           bool
		code            server.Code
		field           string
		events          []string
		wantEventSerial string
	}{
		{name: "match/registered-email", query: serialA, claimed: " Jane@Example.COM ", match: true,
			events: []string{"device.owner_check success "}},
		{name: "match/phone-in-another-format", query: serialB, claimed: "0044 (7700) 900-789", match: true,
			events: []string{"device.owner_check success "}},
		{name: "match/by-device-id", query: "DVR1101134C08011", claimed: "jane@example.com", match: true,
			events: []string{"device.lookup success by=device_id query=DVR1101134C08011", "device.owner_check success "}},
		{name: "mismatch/other-contact", query: serialA, claimed: "john@example.com",
			events: []string{"device.owner_check refused owner_mismatch"}},
		{name: "mismatch/no-contact-registered", query: serialC, claimed: "john@example.com",
			events: []string{"device.owner_check refused owner_mismatch no_contact_registered"}},
		{name: "invalid/claimed-contact", query: serialA, claimed: "jane at example", code: server.EInvalid, field: "claimed_contact",
			events: []string{"device.owner_check refused invalid:claimed_contact"}},
		{name: "invalid/query", query: "hello", claimed: "jane@example.com", code: server.EInvalid, field: "serial",
			events: []string{"device.owner_check refused invalid:serial"}},
		{name: "not-found/unknown-serial", query: unknownSerial, claimed: "jane@example.com", code: server.ENotFound, field: "serial",
			events: []string{"device.owner_check refused not_found"}},
		{name: "not-found/unknown-device-id", query: "DVR9999999999999", claimed: "jane@example.com", code: server.ENotFound, field: "serial",
			events: []string{"device.lookup refused not_found by=device_id query=DVR9999999999999", "device.owner_check refused not_found:serial"}},
		{name: "unavailable/device-id-lookup-error-passes-through-unaudited", query: "DVR1101134C08011", claimed: "jane@example.com",
			setup: func(e *env) {
				e.store.LookupDeviceIDFn = func(context.Context, server.Actor, string) (server.Device, error) {
					return server.Device{}, server.Errorf(server.EUnavailable, "busy")
				}
			}, code: server.EUnavailable},
		{name: "refused/provisioner-may-not-check", actor: provisioner, query: serialA, claimed: "jane@example.com",
			code: server.EPermission, events: []string{"device.owner_check refused permission_denied"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "jane@example.com")
			e.register(serialB, "+447700900789")
			e.register(serialC, "")
			if tt.setup != nil {
				tt.setup(e)
			}
			a := agentA
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			ok, err := e.svc.CheckOwner(e.ctx, a, tt.query, tt.claimed)
			var got []string
			for _, ev := range e.store.Events() {
				got = append(got, string(ev.Action)+" "+string(ev.Outcome)+" "+ev.Detail)
			}
			if strings.Join(got, "\n") != strings.Join(tt.events, "\n") {
				t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.events, "\n"))
			}
			if tt.code != "" {
				if se := wantCode(t, err, tt.code); tt.field != "" && se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				return
			}
			if err != nil || ok != tt.match {
				t.Fatalf("CheckOwner = %v, %v; want %v", ok, err, tt.match)
			}
		})
	}
}

func TestHoldAndRelease(t *testing.T) {
	tests := []struct {
		name    string
		release bool
		actor   server.Actor
		query   string
		reason  string
		setup   func(*env)
		code    server.Code
		field   string
		detail  string
	}{
		{name: "held/reported-stolen", query: serialA, reason: "  reported stolen  "},
		{name: "held/by-device-id", query: "DVR1101134C08011", reason: "reported stolen"},
		{name: "held/replacing-a-hold", query: serialA, reason: "disputed ownership", detail: "replaced", setup: func(e *env) {
			e.svc.HoldDevice(e.ctx, supervisor, serialA, "reported stolen")
		}},
		{name: "refused/agent-may-not-hold", actor: agentA, query: serialA, reason: "stolen", code: server.EPermission, detail: "permission_denied"},
		{name: "invalid/blank-reason", query: serialA, reason: "  ", code: server.EInvalid, field: "reason", detail: "invalid:reason"},
		{name: "invalid/reason-too-long-clipped-on-a-rune", query: serialA, reason: "x" + strings.Repeat("é", 500), code: server.EInvalid, field: "reason", detail: "invalid:reason"},
		{name: "invalid/query", query: "#", reason: "stolen", code: server.EInvalid, field: "serial", detail: "invalid:serial"},
		{name: "not-found/unknown-serial", query: unknownSerial, reason: "stolen", code: server.ENotFound, detail: "not_found"},
		{name: "unavailable/store-error-passes-through", query: serialA, reason: "stolen", setup: func(e *env) {
			e.store.SetHoldFn = func(context.Context, server.Actor, string, *server.Hold, string) error {
				return server.Errorf(server.EUnavailable, "busy")
			}
		}, code: server.EUnavailable},

		{name: "released/after-a-hold", release: true, query: serialA, reason: "found by its owner", setup: func(e *env) {
			e.svc.HoldDevice(e.ctx, supervisor, serialA, "reported stolen")
		}},
		{name: "released/not-on-hold", release: true, query: serialA, reason: "just in case", detail: "not_on_hold"},
		{name: "refused/agent-may-not-release", release: true, actor: agentA, query: serialA, reason: "found",
			code: server.EPermission, detail: "permission_denied"},
		{name: "invalid/release-without-reason", release: true, query: serialA, code: server.EInvalid, field: "reason", detail: "invalid:reason"},
		{name: "invalid/release-query", release: true, query: "hello", reason: "found", code: server.EInvalid, field: "serial", detail: "invalid:serial"},
		{name: "not-found/release-unknown-device-id", release: true, query: "DVR9999999999999", reason: "found",
			code: server.ENotFound, detail: "not_found:serial"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "")
			if tt.setup != nil {
				tt.setup(e)
			}
			a := supervisor
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			act := server.ActionHold
			var (
				h   server.Hold
				err error
			)
			if tt.release {
				act = server.ActionRelease
				err = e.svc.ReleaseDevice(e.ctx, a, tt.query, tt.reason)
			} else {
				h, err = e.svc.HoldDevice(e.ctx, a, tt.query, tt.reason)
			}
			ev := e.store.LastEvent()
			if tt.code != "" {
				if se := wantCode(t, err, tt.code); tt.field != "" && se.Field != tt.field {
					t.Errorf("field %q, want %q", se.Field, tt.field)
				}
				if tt.detail != "" {
					wantEvent(t, ev, act, server.OutcomeRefused, tt.detail)
					if len(ev.Reason) > 500 || !utf8.ValidString(ev.Reason) {
						t.Errorf("event reason of %d bytes (valid UTF-8: %v), want it clipped to 500 on a rune", len(ev.Reason), utf8.ValidString(ev.Reason))
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantEvent(t, ev, act, server.OutcomeSuccess, tt.detail)
			if ev.Serial != serialA || ev.Reason != strings.TrimSpace(tt.reason) && !tt.release || ev.Reason != tt.reason && tt.release {
				t.Errorf("event %+v", ev)
			}
			d, _ := e.store.LookupDevice(e.ctx, agentA, serialA)
			if tt.release {
				if d.Hold != nil {
					t.Errorf("still on hold: %+v", d.Hold)
				}
				return
			}
			want := server.Hold{Reason: strings.TrimSpace(tt.reason), By: supervisor.Subject, Since: start}
			if h != want || d.Hold == nil || *d.Hold != want {
				t.Errorf("HoldDevice = %+v, stored %+v, want %+v", h, d.Hold, want)
			}
		})
	}
}

func TestIssuances(t *testing.T) {
	tests := []struct {
		name      string
		actor     server.Actor
		query     string
		pageSize  int
		storeGets int
		code      server.Code
		detail    string
	}{
		// The store is asked for one more than the page, to know whether
		// another page follows.
		{name: "listed/default-page-size", query: serialA, pageSize: 0, storeGets: server.DefaultIssuancesPage + 1},
		{name: "listed/page-size-given", query: serialA, pageSize: 5, storeGets: 5 + 1},
		{name: "listed/largest-page-size", query: "DVR1101134C08011", pageSize: server.MaxIssuancesPage, storeGets: server.MaxIssuancesPage + 1},
		{name: "clamped/page-size-over-max", query: serialA, pageSize: server.MaxIssuancesPage + 1, storeGets: server.MaxIssuancesPage + 1},
		{name: "invalid/page-size-negative", query: serialA, pageSize: -1, code: server.EInvalid, detail: "invalid:page_size"},
		{name: "invalid/query", query: "x", code: server.EInvalid, detail: "invalid:serial"},
		{name: "refused/auditor-may-not-list", actor: auditor, query: serialA, code: server.EPermission, detail: "permission_denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "")
			got := -1
			e.store.IssuancesFn = func(_ context.Context, _ server.Actor, s string, _ int64, limit int) ([]server.Issuance, error) {
				if s != serialA {
					t.Errorf("store asked for %q", s)
				}
				got = limit
				return nil, nil
			}
			a := agentA
			if tt.actor.Subject != "" {
				a = tt.actor
			}
			_, err := e.svc.Issuances(e.ctx, a, tt.query, tt.pageSize, "")
			if tt.code != "" {
				wantCode(t, err, tt.code)
				wantEvent(t, e.store.LastEvent(), server.ActionListIssuances, server.OutcomeRefused, tt.detail)
				if got != -1 {
					t.Errorf("the store was asked after a refusal")
				}
				return
			}
			if err != nil || got != tt.storeGets {
				t.Errorf("Issuances: %v; the store got page size %d, want %d", err, got, tt.storeGets)
			}
		})
	}
	t.Run("listed/newest-first-within-the-page", func(t *testing.T) {
		e := newEnv(t)
		e.svc.Limits.PerDevice = 10
		e.register(serialA, "")
		for range 3 {
			if _, err := e.svc.Issue(e.ctx, agentA, issueRequest(serialA)); err != nil {
				t.Fatal(err)
			}
		}
		page, err := e.svc.Issuances(e.ctx, supervisor, serialA, 2, "")
		if list := page.Issuances; err != nil || len(list) != 2 || list[0].Sequence != 3 || list[1].Sequence != 2 || page.NextPageToken == "" {
			t.Fatalf("Issuances = %+v, %v", page, err)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionListIssuances, server.OutcomeSuccess, "")
		rest, err := e.svc.Issuances(e.ctx, supervisor, serialA, 2, page.NextPageToken)
		if list := rest.Issuances; err != nil || len(list) != 1 || list[0].Sequence != 1 || rest.NextPageToken != "" {
			t.Fatalf("second page = %+v, %v", rest, err)
		}
		wantEvent(t, e.store.LastEvent(), server.ActionListIssuances, server.OutcomeSuccess, "")
	})
}

// brokenKeyring is a keyring whose JWK set cannot be read.
type brokenKeyring struct{ server.Keyring }

func (brokenKeyring) GrantJWKS() ([]byte, error) { return nil, errors.New("keyring: unreadable") }

func TestGrantJWKS(t *testing.T) {
	e := newEnv(t)
	kid, key := e.keys.GrantSigner()
	for _, a := range []server.Actor{agentA, supervisor, auditor, provisioner} {
		b, err := e.svc.GrantJWKS(e.ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		set, err := grant.ParseJWKS(b)
		if err != nil {
			t.Fatal(err)
		}
		if pub, ok := set.Keys()[kid]; !ok || !pub.Equal(key.Public().(ed25519.PublicKey)) {
			t.Errorf("JWK set %s lacks the signing key %s", b, kid)
		}
	}
	_, err := e.svc.GrantJWKS(e.ctx, server.Actor{Subject: "mallory", Role: "root"})
	wantCode(t, err, server.EPermission)

	e.svc.Keyring = brokenKeyring{e.keys}
	_, err = e.svc.GrantJWKS(e.ctx, agentA)
	if se := wantCode(t, err, server.EInternal); strings.Contains(se.Message, "unreadable") || !errors.Is(se, se.Err) {
		t.Errorf("internal error shows its cause: %q", se.Message)
	}
	if len(e.store.Events()) != 0 {
		t.Errorf("GrantJWKS wrote events: %+v", e.store.Events())
	}
}

func TestNewUUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		u := server.NewUUID()
		if !re.MatchString(u) || seen[u] {
			t.Fatalf("NewUUID = %q (seen before: %v)", u, seen[u])
		}
		seen[u] = true
	}
}

func TestNewServiceDefaults(t *testing.T) {
	st := newMemStore(&testClock{t: start})
	svc := server.NewService(st, nil)
	if svc.Limits != server.DefaultLimits || svc.Now == nil || svc.Logger == nil || svc.Store != st {
		t.Errorf("NewService = %+v", svc)
	}
	// A Service built by hand still has a clock and a logger.
	bare := &server.Service{Store: st}
	if _, err := bare.HoldDevice(context.Background(), supervisor, serialA, "stolen"); server.ErrorCode(err) != server.ENotFound {
		t.Errorf("HoldDevice on a bare Service = %v", err)
	}
	if got := (server.Limits{PerDevice: -1}).WithDefaults(); got != server.DefaultLimits {
		t.Errorf("WithDefaults = %+v", got)
	}
}
