package console

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// auditActions are the actions offered in the audit filter's list.
var auditActions = []server.Action{
	server.ActionIssue, server.ActionIssueReplay, server.ActionLookup, server.ActionOwnerCheck, server.ActionHold, server.ActionRelease,
	server.ActionListIssuances, server.ActionRegister, server.ActionImport, server.ActionAuditQuery, server.ActionAuditExport,
	server.ActionAuditSummary, server.ActionAuditVerify, server.ActionAuditCheckpoint,
	server.ActionApprovalRequest, server.ActionApprovalGrant, server.ActionApprovalDeny, server.ActionApprovalExpire, server.ActionApprovalReveal,
}

// auditFilterForm is the audit filter as typed.
type auditFilterForm struct {
	Serial, Actor, Action, Outcome, From, To string
}

// inputTime is the format of a datetime-local field (UTC).
const inputTime = "2006-01-02T15:04"

// readAuditFilter reads the filter fields of q; a malformed time is EInvalid.
func readAuditFilter(q url.Values) (auditFilterForm, server.AuditFilter, error) {
	ff := auditFilterForm{Serial: strings.TrimSpace(q.Get("serial")), Actor: strings.TrimSpace(q.Get("actor")),
		Action: q.Get("action"), Outcome: q.Get("outcome"), From: q.Get("from"), To: q.Get("to")}
	f := server.AuditFilter{Serial: ff.Serial, Actor: ff.Actor, Action: server.Action(ff.Action), Outcome: server.Outcome(ff.Outcome)}
	for _, t := range []struct {
		field, v string
		dst      *time.Time
	}{{"from", ff.From, &f.From}, {"to", ff.To, &f.To}} {
		if t.v == "" {
			continue
		}
		v, err := time.Parse(inputTime, t.v)
		if err != nil {
			if v, err = time.Parse("2006-01-02", t.v); err != nil {
				return ff, f, server.Invalid(t.field, "%s %q: expected a UTC date and time like 2026-03-01T09:30", t.field, t.v)
			}
		}
		*t.dst = v.UTC()
	}
	return ff, f, nil
}

// auditData is the audit query page. Its rows and options are laid out
// here rather than by template functions: a function call in a template is
// a reflect call, and on a page of 50 events those calls were most of the
// time the page took to render.
type auditData struct {
	Filter  auditFilterForm
	Actions []actionOption
	Events  []auditRow
	Next    string
	Query   string
	Problem *problem
}

// actionOption is one choice of the action filter.
type actionOption struct {
	Value    server.Action
	Selected bool
}

// auditRow is one event as the audit page shows it.
type auditRow struct {
	server.AuditEvent
	TimeUTC string
	From    string
}

func actionOptions(selected string) []actionOption {
	out := make([]actionOption, len(auditActions))
	for i, a := range auditActions {
		out[i] = actionOption{Value: a, Selected: string(a) == selected}
	}
	return out
}

func auditRows(evs []server.AuditEvent) []auditRow {
	out := make([]auditRow, len(evs))
	for i, e := range evs {
		out[i] = auditRow{AuditEvent: e, TimeUTC: e.Time.UTC().Format("2006-01-02 15:04:05 UTC"), From: "API"}
		if strings.HasPrefix(e.ClientAddr, "console:") {
			out[i].From = "console"
		}
	}
	return out
}

// cursor encodes a keyset position as "unixnano.id".
func cursor(e server.AuditEvent) string {
	return strconv.FormatInt(e.Time.UnixNano(), 10) + "." + strconv.FormatInt(e.ID, 10)
}

func parseCursor(s string) (time.Time, int64, bool) {
	a, b, ok := strings.Cut(s, ".")
	ns, err1 := strconv.ParseInt(a, 10, 64)
	id, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || id <= 0 {
		return time.Time{}, 0, false
	}
	return time.Unix(0, ns).UTC(), id, true
}

func filterQuery(ff auditFilterForm) url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"serial": ff.Serial, "actor": ff.Actor, "action": ff.Action, "outcome": ff.Outcome, "from": ff.From, "to": ff.To} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// audit is the audit query with its filters and keyset pages.
func (c *Console) audit(w http.ResponseWriter, r *http.Request, rq *request) {
	q := r.URL.Query()
	ff, f, err := readAuditFilter(q)
	d := auditData{Filter: ff, Actions: actionOptions(ff.Action), Query: filterQuery(ff).Encode()}
	if err == nil && q.Get("after") != "" {
		t, id, ok := parseCursor(q.Get("after"))
		if !ok {
			err = server.Invalid("after", "the page link is damaged: start from the first page")
		}
		f.AfterTime, f.AfterID = t, id
	}
	if err == nil {
		f.Limit = 50
		var (
			more bool
			evs  []server.AuditEvent
		)
		evs, more, err = c.svc.QueryAudit(r.Context(), rq.Actor, f)
		d.Events = auditRows(evs)
		if more && len(evs) > 0 {
			v := filterQuery(ff)
			v.Set("after", cursor(evs[len(evs)-1]))
			d.Next = v.Encode()
		}
	}
	status := http.StatusOK
	if err != nil {
		p := asProblem(err)
		if p.Status == http.StatusInternalServerError || p.Status == http.StatusForbidden {
			c.fail(w, r, rq, err)
			return
		}
		d.Problem, status = &p, p.Status
	}
	c.render(w, r, status, "audit", rq, d)
}

// exportEvent is one line of a JSON lines export.
type exportEvent struct {
	ID         int64  `json:"id"`
	Time       string `json:"time"`
	Actor      string `json:"actor"`
	Role       string `json:"role"`
	ClientAddr string `json:"client_addr,omitempty"`
	Action     string `json:"action"`
	Outcome    string `json:"outcome"`
	Serial     string `json:"serial,omitempty"`
	Ticket     string `json:"ticket,omitempty"`
	Method     int    `json:"method,omitempty"`
	Reason     string `json:"reason,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	IssuanceID string `json:"issuance_id,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

var csvHeader = []string{"id", "time", "actor", "role", "client_addr", "action", "outcome", "serial", "ticket", "method", "reason", "request_id", "issuance_id", "detail"}

// export streams the filtered events as a download, oldest first.
func (c *Console) export(w http.ResponseWriter, r *http.Request, rq *request) {
	_, f, err := readAuditFilter(r.URL.Query())
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	format := r.URL.Query().Get("format")
	if format != "csv" && format != "jsonl" {
		c.fail(w, r, rq, server.Invalid("format", "format %q: expected csv or jsonl", clipText(format, 16)))
		return
	}
	name := "hotline-audit-" + time.Now().UTC().Format("20060102T150405Z") + "." + format
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		if format == "csv" {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/jsonl; charset=utf-8")
		}
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	}
	flusher, _ := w.(http.Flusher)
	cw := csv.NewWriter(w)
	enc := json.NewEncoder(w)
	n := 0
	err = c.svc.ExportAudit(r.Context(), rq.Actor, f, func(e server.AuditEvent) error {
		if !started {
			start()
			if format == "csv" {
				cw.Write(csvHeader)
			}
		}
		x := exportEvent{ID: e.ID, Time: e.Time.UTC().Format(time.RFC3339Nano), Actor: e.Actor, Role: string(e.Role), ClientAddr: e.ClientAddr,
			Action: string(e.Action), Outcome: string(e.Outcome), Serial: e.Serial, Ticket: e.Ticket, Method: int(e.Method), Reason: e.Reason,
			RequestID: e.RequestID, IssuanceID: e.IssuanceID, Detail: e.Detail}
		var werr error
		if format == "csv" {
			werr = cw.Write([]string{strconv.FormatInt(x.ID, 10), x.Time, x.Actor, x.Role, x.ClientAddr, x.Action, x.Outcome, x.Serial,
				csvSafe(x.Ticket), strconv.Itoa(x.Method), csvSafe(x.Reason), x.RequestID, x.IssuanceID, x.Detail})
		} else {
			werr = enc.Encode(x)
		}
		if n++; n%500 == 0 {
			cw.Flush()
			if flusher != nil {
				flusher.Flush()
			}
		}
		return werr
	})
	if err != nil && !started {
		c.fail(w, r, rq, err)
		return
	}
	if !started {
		start()
		if format == "csv" {
			cw.Write(csvHeader)
		}
	}
	cw.Flush()
	if err != nil {
		c.log.Error("console: export cut short", "err", err)
	}
}

// csvSafe keeps a spreadsheet from reading free text as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// bar is one bar of a horizontal bar chart, laid out by the server.
type bar struct {
	Label       string
	Value       int64
	Y, W, TextY int
}

// chart is a server-rendered SVG bar chart.
type chart struct {
	Title  string
	Bars   []bar
	Height int
}

const chartBarWidth = 360

func newChart(title string, labels []string, values []int64) chart {
	ch := chart{Title: title, Height: 24*len(labels) + 8}
	var max int64 = 1
	for _, v := range values {
		max = maxInt64(max, v)
	}
	for i, l := range labels {
		w := int(values[i] * chartBarWidth / max)
		if values[i] > 0 && w < 2 {
			w = 2
		}
		ch.Bars = append(ch.Bars, bar{Label: l, Value: values[i], Y: 4 + 24*i, W: w, TextY: 20 + 24*i})
	}
	return ch
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// summaryData is the summary page.
type summaryData struct {
	Summary  server.AuditSummary
	PerAgent chart
	Refusals chart
	Days     int
}

// summary shows the audit summary of the last days with two charts.
func (c *Console) summary(w http.ResponseWriter, r *http.Request, rq *request) {
	days, _ := strconv.Atoi(r.URL.Query().Get("days"))
	if days <= 0 || days > 31 {
		days = 7
	}
	to := time.Now().UTC()
	s, err := c.svc.SummarizeAudit(r.Context(), rq.Actor, to.Add(-time.Duration(days)*24*time.Hour), to)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	var la, lr []string
	var va, vr []int64
	for _, x := range s.PerAgentDay {
		la = append(la, x.Day.Format("01-02")+" "+x.Actor)
		va = append(va, x.Count)
	}
	for _, x := range s.Refusals {
		lr = append(lr, string(x.Action)+" "+x.Reason)
		vr = append(vr, x.Count)
	}
	c.render(w, r, http.StatusOK, "summary", rq, summaryData{Summary: s, Days: days,
		PerAgent: newChart("Codes issued per agent per day", la, va), Refusals: newChart("Refusals by reason", lr, vr)})
}

// verify verifies the audit log and shows the result.
func (c *Console) verify(w http.ResponseWriter, r *http.Request, rq *request) {
	rep, err := c.svc.VerifyAudit(r.Context(), rq.Actor, nil)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	cp, cerr := c.svc.AuditCheckpoint(r.Context(), rq.Actor)
	d := struct {
		Report     server.AuditReport
		Checkpoint *server.AuditCheckpoint
	}{Report: rep}
	if cerr == nil {
		d.Checkpoint = &cp
	}
	c.render(w, r, http.StatusOK, "verify", rq, d)
}

// checkpoint downloads the latest signed checkpoint.
func (c *Console) checkpoint(w http.ResponseWriter, r *http.Request, rq *request) {
	cp, err := c.svc.AuditCheckpoint(r.Context(), rq.Actor)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="hotline-checkpoint-%d.txt"`, cp.Size))
	fmt.Fprint(w, cp.Text)
}

// teamData is the supervisor's list of today's issuances.
type teamData struct {
	Events []server.AuditEvent
	More   bool
	Since  time.Time
}

// teamToday lists today's (UTC) issuances, newest first.
func (c *Console) teamToday(w http.ResponseWriter, r *http.Request, rq *request) {
	since := time.Now().UTC().Truncate(24 * time.Hour)
	evs, more, err := c.svc.QueryAudit(r.Context(), rq.Actor, server.AuditFilter{Action: server.ActionIssue, Outcome: server.OutcomeSuccess, From: since, Limit: 200})
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	c.render(w, r, http.StatusOK, "team", rq, teamData{Events: evs, More: more, Since: since})
}
