package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/server"
)

// TestApprovedCodeIsShownOnlyToTheRequesterOnce: an agent over the limit
// asks, another agent can neither read the request nor get its code, the
// supervisor's grant makes the code, and the requester sees it once.
func TestApprovedCodeIsShownOnlyToTheRequesterOnce(t *testing.T) {
	h := newHarness(t, Config{})
	_, id := h.register("owner@example.com")
	alice, mallory := h.signIn("alice", server.RoleAgent), h.signIn("mallet", server.RoleAgent)
	sue := h.signIn("sue", server.RoleSupervisor)
	for range server.DefaultLimits.PerDevice {
		h.do("POST", "/devices/"+id+"/issue", mallory, url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-1"}, "method": {"2"}})
	}
	form := url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-2"}, "method": {"2"}}
	resp, body := h.do("POST", "/devices/"+id+"/issue", alice, form)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, `id="ask-approval"`) || !strings.Contains(body, `value="LIMIT_PER_DEVICE"`) {
		t.Fatalf("over the limit: %d, the page offers no request for approval", resp.StatusCode)
	}
	form.Set("blocked", "LIMIT_PER_DEVICE")
	if resp, body := h.do("POST", "/devices/"+id+"/ask-approval", alice, form); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="ask-error"`) {
		t.Fatalf("asking without a reason: %d", resp.StatusCode)
	}
	form.Set("approval_reason", "the shop's cameras are down")
	resp, _ = h.do("POST", "/devices/"+id+"/ask-approval", alice, form)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/approvals/") {
		t.Fatalf("asking: %d to %q", resp.StatusCode, loc)
	}
	aid := strings.TrimPrefix(loc, "/approvals/")
	if _, body := h.do("GET", loc+"/status", alice, nil); !strings.Contains(body, `"state":"pending"`) {
		t.Fatalf("status %s", body)
	}
	if resp, _ := h.do("GET", loc+"/status", mallory, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another agent reads the request: %d, want 404", resp.StatusCode)
	}
	if _, body := h.do("GET", "/approvals/list", sue, nil); !strings.Contains(body, aid) || !strings.Contains(body, "the shop&#39;s cameras are down") {
		t.Fatal("the queue does not list the request")
	}
	if resp, _ := h.do("GET", "/approvals/list", alice, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an agent reads the queue: %d", resp.StatusCode)
	}
	resp, _ = h.do("POST", loc+"/grant", sue, url.Values{"comment": {"known installer"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("grant: %d", resp.StatusCode)
	}
	if _, body := h.do("GET", loc+"/status", alice, nil); !strings.Contains(body, `"ready":true`) {
		t.Fatalf("status after the grant %s", body)
	}
	if resp, body := h.do("POST", loc+"/reveal", mallory, nil); resp.StatusCode != http.StatusForbidden || strings.Contains(body, `id="voice-code"`) {
		t.Fatalf("another agent's reveal: %d", resp.StatusCode)
	}
	_, first := h.do("POST", loc+"/reveal", alice, nil)
	_, second := h.do("POST", loc+"/reveal", alice, nil)
	if !strings.Contains(first, `id="voice-code"`) || strings.Contains(second, `id="voice-code"`) || !strings.Contains(second, "already shown") {
		t.Fatal("the approved code was not shown exactly once")
	}
}
