package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// pollEvery is how often the waiting and the queue pages ask for news.
const pollEvery = 2 * time.Second

// approvalRow is one request in the supervisors' queue.
type approvalRow struct {
	server.Approval
	DeviceID string
	Left     string
}

// queueData is the supervisors' queue page.
type queueData struct {
	Rows    []approvalRow
	Problem *problem
	PollMS  int64
	// Answered names the request just answered, and how.
	Answered string
}

func deviceIDOf(serial string) string { return serial[strings.LastIndexByte(serial, '#')+1:] }

func (c *Console) queueRows(r *http.Request, rq *request) ([]approvalRow, error) {
	aps, err := c.svc.PendingApprovals(r.Context(), rq.Actor)
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	rows := make([]approvalRow, len(aps))
	for i, ap := range aps {
		left := max(ap.ExpiresAt.Sub(now), 0)
		rows[i] = approvalRow{Approval: ap, DeviceID: deviceIDOf(ap.Request.Serial), Left: strconv.Itoa(int(left.Round(time.Minute)/time.Minute)) + " min"}
	}
	return rows, nil
}

// queue is the supervisors' queue of requests for approval; its script
// fetches queueRows every pollEvery and adds or drops rows, leaving what
// a supervisor is typing alone.
func (c *Console) queue(w http.ResponseWriter, r *http.Request, rq *request) {
	c.queueWith(w, r, rq, http.StatusOK, nil, r.URL.Query().Get("answered"))
}

func (c *Console) queueWith(w http.ResponseWriter, r *http.Request, rq *request, status int, p *problem, answered string) {
	rows, err := c.queueRows(r, rq)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if answered != "granted" && answered != "denied" {
		answered = ""
	}
	c.render(w, r, status, "approvals", rq, queueData{Rows: rows, Problem: p, PollMS: pollEvery.Milliseconds(), Answered: answered})
}

// queueList is the queue's rows alone, for the page's script.
func (c *Console) queueList(w http.ResponseWriter, r *http.Request, rq *request) {
	rows, err := c.queueRows(r, rq)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	var buf bytes.Buffer
	if err := c.pages["approvals"].ExecuteTemplate(&buf, "rows", rows); err != nil {
		c.log.Error("console: rendering the queue failed", "err", err)
		http.Error(w, internalMessage, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// askApproval asks a supervisor to issue the refused issue form.
func (c *Console) askApproval(w http.ResponseWriter, r *http.Request, rq *request) {
	f := readIssueForm(r)
	id := r.PathValue("id")
	ap, err := c.svc.RequestApproval(r.Context(), rq.Actor, f.issueRequest(id), server.Reason(r.PostFormValue("blocked")), r.PostFormValue("approval_reason"))
	if err != nil {
		c.refusedOnDevice(w, r, rq, err, true, func(d *deviceData, p *problem) {
			p.Reason = server.Reason(r.PostFormValue("blocked"))
			d.Form, d.RequestID, d.Problem, d.AskProblem = f, f.RequestID, p, true
		})
		return
	}
	http.Redirect(w, r, "/approvals/"+ap.ID, http.StatusSeeOther)
}

// waitData is the requester's page of one request for approval.
type waitData struct {
	server.Approval
	DeviceID string
	PollMS   int64
}

// approval shows the requester where their request stands; while it is
// pending the page's script polls approvalStatus and, once granted, posts
// the reveal form by itself.
func (c *Console) approval(w http.ResponseWriter, r *http.Request, rq *request) {
	ap, err := c.svc.ApprovalStatus(r.Context(), rq.Actor, r.PathValue("aid"))
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	c.render(w, r, http.StatusOK, "approval", rq, waitData{Approval: ap, DeviceID: deviceIDOf(ap.Request.Serial), PollMS: pollEvery.Milliseconds()})
}

// approvalStatus is a request's state as JSON, for the waiting page.
func (c *Console) approvalStatus(w http.ResponseWriter, r *http.Request, rq *request) {
	ap, err := c.svc.ApprovalStatus(r.Context(), rq.Actor, r.PathValue("aid"))
	if err != nil {
		p := asProblem(err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(p.Status)
		json.NewEncoder(w).Encode(map[string]string{"error": p.Message})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		State string `json:"state"`
		Ready bool   `json:"ready"`
	}{string(ap.State), ap.State == server.ApprovalGranted && ap.IssuanceID != ""})
}

// approvalReveal shows the requester the code their granted request was
// issued, once (as the issue form's reveal is).
func (c *Console) approvalReveal(w http.ResponseWriter, r *http.Request, rq *request) {
	aid := r.PathValue("aid")
	back := "/approvals/" + aid
	if !c.fresh(rq.Session) {
		c.render(w, r, http.StatusUnauthorized, "fresh", rq, struct{ Next string }{Next: back})
		return
	}
	key := "approval:" + aid
	shown, err := c.store.Revealed(r.Context(), rq.Actor.Subject, key)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if shown {
		c.render(w, r, http.StatusOK, "shown", rq, shownData{Back: back})
		return
	}
	iss, err := c.svc.ApprovedCode(r.Context(), rq.Actor, aid)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	first, err := c.store.MarkRevealed(r.Context(), rq.Actor.Subject, key, iss.ID)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if !first {
		c.render(w, r, http.StatusOK, "shown", rq, shownData{Back: back})
		return
	}
	c.reveal(w, r, rq, deviceIDOf(iss.Serial), iss, false)
}

// grant and deny answer a request for approval from the queue.
func (c *Console) grant(w http.ResponseWriter, r *http.Request, rq *request) {
	c.answer(w, r, rq, true)
}

func (c *Console) deny(w http.ResponseWriter, r *http.Request, rq *request) {
	c.answer(w, r, rq, false)
}

func (c *Console) answer(w http.ResponseWriter, r *http.Request, rq *request, grant bool) {
	_, err := c.svc.AnswerApproval(r.Context(), rq.Actor, r.PathValue("aid"), grant, r.PostFormValue("comment"))
	if err != nil {
		p := asProblem(err)
		if p.Status == http.StatusInternalServerError {
			c.fail(w, r, rq, err)
			return
		}
		c.queueWith(w, r, rq, p.Status, &p, "")
		return
	}
	how := "denied"
	if grant {
		how = "granted"
	}
	http.Redirect(w, r, "/approvals?answered="+how, http.StatusSeeOther)
}
