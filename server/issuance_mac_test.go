package server_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// TestRetryOfAnIssuanceChangedInTheStoreIsRefused: whoever can write the
// store changes one field of a stored issuance (its time, its sequence,
// its actor, its ticket, ...) and retries its request id. Every field is
// covered by the issuance's proof: the retry is refused, audited as
// issuance_unproven, and no code is derived.
func TestRetryOfAnIssuanceChangedInTheStoreIsRefused(t *testing.T) {
	changes := map[string]func(*server.Issuance){
		"ID":             func(i *server.Issuance) { i.ID = server.NewUUID() },
		"RequestID":      func(i *server.Issuance) { i.RequestID += "x" },
		"Serial":         func(i *server.Issuance) { i.Serial = serialB },
		"Sequence":       func(i *server.Issuance) { i.Sequence += 7 },
		"KeyGeneration":  func(i *server.Issuance) { i.KeyGeneration++ },
		"SigningKeyID":   func(i *server.Issuance) { i.SigningKeyID = "grant-9" },
		"IssuedAt":       func(i *server.Issuance) { i.IssuedAt = i.IssuedAt.Add(time.Microsecond) },
		"ExpiresAt":      func(i *server.Issuance) { i.ExpiresAt = i.ExpiresAt.Add(time.Hour) },
		"Actor":          func(i *server.Issuance) { i.Actor = "mallory" },
		"ActorRole":      func(i *server.Issuance) { i.ActorRole = server.RoleSupervisor },
		"Ticket":         func(i *server.Issuance) { i.Ticket = "SUP-FORGED" },
		"Method":         func(i *server.Issuance) { i.Method = server.VerifyOther },
		"MethodNote":     func(i *server.Issuance) { i.MethodNote = "forged" },
		"OverrideReason": func(i *server.Issuance) { i.OverrideReason = "forged" },
		"RequestCode":    func(i *server.Issuance) { i.RequestCode = "00000-00000" },
		"MAC":            func(i *server.Issuance) { i.MAC[0] ^= 1 },
	}
	fields := reflect.TypeFor[server.Issuance]()
	for i := range fields.NumField() {
		if _, ok := changes[fields.Field(i).Name]; !ok {
			t.Errorf("Issuance.%s has no case here: is it covered by IssuanceMACMessage?", fields.Field(i).Name)
		}
	}
	changes["no-proof"] = func(i *server.Issuance) { i.MAC = [server.IssuanceMACSize]byte{} }
	for name, change := range changes {
		t.Run("refused/changed-"+name, func(t *testing.T) {
			e := newEnv(t)
			e.register(serialA, "")
			e.register(serialB, "")
			req := issueRequest(serialA)
			if _, err := e.svc.Issue(e.ctx, agentA, req); err != nil {
				t.Fatal(err)
			}
			stored := &e.store.issuances[len(e.store.issuances)-1]
			change(stored)
			// The retry that finds the changed row under its key.
			by := server.Actor{Subject: stored.Actor, Role: server.RoleAgent, ClientAddr: agentA.ClientAddr}
			req.RequestID, req.Serial = stored.RequestID, stored.Serial
			got, err := e.svc.Issue(e.ctx, by, req)
			var se *server.Error
			if !errors.As(err, &se) || se.Code != server.EConflict || se.Reason != server.ReasonRequestIDReused ||
				!errors.Is(err, server.ErrIssuanceUnproven) || got.VoiceCode != "" {
				t.Fatalf("retry = %+v, %v; want a refusal and no code", got, err)
			}
			ev := e.store.LastEvent()
			if ev.Action != server.ActionIssue || ev.Outcome != server.OutcomeRefused || ev.IssuanceID != stored.ID ||
				!strings.HasPrefix(ev.Detail, "issuance_unproven seq=") {
				t.Fatalf("event %+v, want the refusal naming the issuance", ev)
			}
		})
	}
}

// TestIssuanceMACMessageVector pins the encoding the proof covers.
func TestIssuanceMACMessageVector(t *testing.T) {
	iss := server.Issuance{ID: "i", RequestID: "r", Serial: "s", Sequence: 1, KeyGeneration: 2, SigningKeyID: "k",
		IssuedAt: time.UnixMicro(3), ExpiresAt: time.UnixMicro(4), Actor: "a", ActorRole: server.RoleAgent,
		Ticket: "t", Method: server.VerifyOther, MethodNote: "n", OverrideReason: "o"}
	const want = "00000013686f746c696e652f69737375616e63652f7631" + // "hotline/issuance/v1"
		"0000000169" + "0000000172" + "0000000173" + // id, request id, serial
		"000000080000000000000001" + "000000080000000000000002" + "000000016b" + // sequence, generation, kid
		"000000080000000000000003" + "000000080000000000000004" + // issued, expires (µs)
		"0000000161" + "000000056167656e74" + "0000000174" + // actor, role "agent", ticket
		"000000080000000000000004" + "000000016e" + "000000016f" // method, note, override
	if got := hexString(server.IssuanceMACMessage(iss)); got != want {
		t.Fatalf("IssuanceMACMessage =\n%s\nwant\n%s", got, want)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// FuzzIssuanceMACMessageIsInjective: two issuances that differ in any
// field never share a message (every field is length-prefixed), so no
// proof of one is a proof of another. Seeds: fields that would run
// together without the lengths ("ab"+"c" and "a"+"bc"), empty fields.
func FuzzIssuanceMACMessageIsInjective(f *testing.F) {
	f.Add("ab", "c", "a", "bc", int64(1), int64(1))
	f.Add("", "", "", "", int64(0), int64(0))
	f.Add("x", "", "", "x", int64(256), int64(1))
	f.Fuzz(func(t *testing.T, ticket1, note1, ticket2, note2 string, seq1, seq2 int64) {
		a := server.Issuance{ID: "i", Ticket: ticket1, MethodNote: note1, Sequence: seq1}
		b := server.Issuance{ID: "i", Ticket: ticket2, MethodNote: note2, Sequence: seq2}
		same := ticket1 == ticket2 && note1 == note2 && seq1 == seq2
		if string(server.IssuanceMACMessage(a)) == string(server.IssuanceMACMessage(b)) != same {
			t.Fatalf("%+v and %+v: messages equal %v, fields equal %v", a, b, !same, same)
		}
	})
}
