package console

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// historyPage is how many issuances the device page shows at once.
const historyPage = 10

// search resolves the one search box: full serial, device id or QR text.
func (c *Console) search(w http.ResponseWriter, r *http.Request, rq *request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		c.render(w, r, http.StatusOK, "search", rq, searchForm{})
		return
	}
	v, err := c.svc.LookupDevice(r.Context(), rq.Actor, sloppySerial(q))
	if err != nil {
		p := asProblem(err)
		if p.Status == http.StatusInternalServerError {
			c.fail(w, r, rq, err)
			return
		}
		c.render(w, r, p.Status, "search", rq, searchForm{Query: q, Problem: &p})
		return
	}
	http.Redirect(w, r, "/devices/"+v.Device.DeviceID, http.StatusSeeOther)
}

// sloppySerial reads a serial typed with spaces, slashes or commas in
// place of its '#' separators as the serial; anything else is left to the
// service's parser, which already ignores case and spaces.
func sloppySerial(q string) string {
	if strings.Contains(q, "#") {
		return q
	}
	f := strings.FieldsFunc(q, func(r rune) bool { return r == ' ' || r == '\t' || r == '/' || r == ',' || r == ';' })
	if len(f) == 4 {
		return strings.Join(f, "#")
	}
	return q
}

// searchForm is the search page with its refusal shown next to the box.
type searchForm struct {
	Query   string
	Problem *problem
}

// deviceData is the device page.
type deviceData struct {
	View      server.DeviceView
	History   []server.Issuance
	NextPage  string
	RequestID string
	// Verified is "match" or "mismatch" after an owner check.
	Verified string
	// Form is the issue form as sent, re-shown with its refusal.
	Form      issueForm
	Problem   *problem
	Fresh     bool
	Methods   []methodOption
	LimitUsed bool
	// AskProblem is set when Problem is the refusal of a request for a
	// supervisor's approval (shown next to that form).
	AskProblem bool
	// Email is the registered e-mail address, masked; empty when the
	// owner contact is not an e-mail address.
	Email string
	// Deliveries are the device's latest outbox messages (nil for a role
	// that may not read them).
	Deliveries []server.MailStatus
	// CodeSent is the owner code message just sent, CodeExpires when its
	// code stops being accepted; CodeProblem the refusal of sending or
	// entering a code; CodeValidity how long a verified code may be spent.
	CodeSent     *server.MailStatus
	CodeExpires  string
	CodeProblem  *problem
	CodeValidity string
}

type methodOption struct {
	Value server.VerificationMethod
	Label string
}

var methodOptions = []methodOption{
	{server.VerifyOwnerContact, "Owner contact matched (checked above)"},
	{server.VerifyProofOfPurchase, "Proof of purchase (invoice or receipt)"},
	{server.VerifyInstallerAccount, "Registered installer's account"},
	{server.VerifyOther, "Other (say what in the note)"},
}

// emailMethod is the method option of a device with an e-mail address.
var emailMethod = methodOption{server.VerifyOwnerEmailCode, "Code e-mailed to the owner, read back by the caller (checked above)"}

// issueForm is the issue form's fields.
type issueForm struct {
	RequestID, Ticket, Note, Override string
	Method                            server.VerificationMethod
	// RequestCode is the code a DVR without a clock shows; optional.
	RequestCode string
	// Delivery is how the code reaches the caller.
	Delivery server.Delivery
}

func readIssueForm(r *http.Request) issueForm {
	m, _ := strconv.Atoi(r.PostFormValue("method"))
	return issueForm{RequestID: r.PostFormValue("request_id"), Ticket: r.PostFormValue("ticket"), Note: r.PostFormValue("note"),
		Override: r.PostFormValue("override_reason"), Method: server.VerificationMethod(m), RequestCode: r.PostFormValue("request_code"),
		Delivery: readDelivery(r.PostFormValue("delivery"))}
}

// issueRequest is the service's request for the form f about device id.
func (f issueForm) issueRequest(id string) server.IssueRequest {
	return server.IssueRequest{RequestID: f.RequestID, Serial: id, Ticket: f.Ticket, Method: f.Method, MethodNote: f.Note,
		OverrideReason: f.Override, RequestCode: f.RequestCode, Delivery: f.Delivery}
}

// loadDevice reads the device page's facts: the device, one history page.
func (c *Console) loadDevice(r *http.Request, rq *request, pageToken string) (deviceData, error) {
	id := r.PathValue("id")
	v, err := c.svc.LookupDevice(r.Context(), rq.Actor, id)
	if err != nil {
		return deviceData{}, err
	}
	hist, err := c.svc.Issuances(r.Context(), rq.Actor, v.Device.Serial, historyPage, pageToken)
	if err != nil {
		return deviceData{}, err
	}
	d := deviceData{View: v, History: hist.Issuances, NextPage: hist.NextPageToken, RequestID: server.NewUUID(),
		Fresh: c.fresh(rq.Session), Methods: methodOptions, LimitUsed: v.RecentIssuances >= v.PerDeviceLimit}
	if err := c.withMailRoute(r, rq, &d); err != nil {
		return deviceData{}, err
	}
	return d, nil
}

func (c *Console) device(w http.ResponseWriter, r *http.Request, rq *request) {
	d, err := c.loadDevice(r, rq, r.URL.Query().Get("page"))
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if sent := r.URL.Query().Get("sent"); sent != "" {
		c.showSent(&d, sent)
	}
	c.render(w, r, http.StatusOK, "device", rq, d)
}

// ownerCheck checks the contact the caller gives against the registered
// one, showing only whether it matched.
func (c *Console) ownerCheck(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	ok, err := c.svc.CheckOwner(r.Context(), rq.Actor, id, r.PostFormValue("claimed_contact"))
	d, lerr := c.loadDevice(r, rq, "")
	if lerr != nil {
		c.fail(w, r, rq, lerr)
		return
	}
	status := http.StatusOK
	switch {
	case err != nil:
		p := asProblem(err)
		if p.Status == http.StatusInternalServerError {
			c.fail(w, r, rq, err)
			return
		}
		if p.Field == "claimed_contact" {
			p.Message = "That is not an e-mail address or a phone number: ask the caller again."
		}
		d.Problem, status = &p, p.Status
	case ok:
		d.Verified = "match"
		d.Form.Method = server.VerifyOwnerContact
	default:
		d.Verified = "mismatch"
	}
	c.render(w, r, status, "device", rq, d)
}

// revealData is the one-time view of a code.
type revealData struct {
	server.Issued
	Groups     []string
	DeviceID   string
	ExpiresUTC string
	ExpiresISO string
	Validity   string
	Again      bool
}

// shownData is the page of a form whose code was already shown.
type shownData struct {
	DeviceID string
	Form     issueForm
	// Back, when set, is the approval whose code was shown.
	Back string
}

// issue issues a code for the form. The form's request id makes the act
// idempotent at the service; the console also remembers which forms had
// their code shown, so a reload, a back button or a second click shows no
// code again (showing it again is its own audited act).
func (c *Console) issue(w http.ResponseWriter, r *http.Request, rq *request) {
	f := readIssueForm(r)
	id := r.PathValue("id")
	if f.RequestID == "" {
		c.fail(w, r, rq, server.Invalid("request_id", "the form has no request id: open the device page again"))
		return
	}
	if !c.fresh(rq.Session) {
		c.needFresh(w, r, rq, id)
		return
	}
	shown, err := c.store.Revealed(r.Context(), rq.Actor.Subject, f.RequestID)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if shown {
		c.render(w, r, http.StatusOK, "shown", rq, shownData{DeviceID: id, Form: f})
		return
	}
	iss, err := c.svc.Issue(r.Context(), rq.Actor, f.issueRequest(id))
	if err != nil {
		c.refusedOnDevice(w, r, rq, err, false, func(d *deviceData, p *problem) {
			d.Form, d.RequestID, d.Problem = f, f.RequestID, p
		})
		return
	}
	first, err := c.store.MarkRevealed(r.Context(), rq.Actor.Subject, f.RequestID, iss.ID)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if !first {
		c.render(w, r, http.StatusOK, "shown", rq, shownData{DeviceID: id, Form: f})
		return
	}
	c.reveal(w, r, rq, id, iss, false)
}

// showAgain shows an already shown code again: the service hands out the
// same issuance for the form's request id and audits it as a replay.
func (c *Console) showAgain(w http.ResponseWriter, r *http.Request, rq *request) {
	f := readIssueForm(r)
	id := r.PathValue("id")
	if !c.fresh(rq.Session) {
		c.needFresh(w, r, rq, id)
		return
	}
	shown, err := c.store.Revealed(r.Context(), rq.Actor.Subject, f.RequestID)
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	if !shown {
		c.fail(w, r, rq, server.Invalid("request_id", "no code of yours was shown for this form: issue from the device page"))
		return
	}
	iss, err := c.svc.Issue(r.Context(), rq.Actor, f.issueRequest(id))
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	c.reveal(w, r, rq, id, iss, true)
}

func (c *Console) reveal(w http.ResponseWriter, r *http.Request, rq *request, id string, iss server.Issued, again bool) {
	d := revealData{Issued: iss, DeviceID: id, Again: again,
		ExpiresUTC: iss.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC"), ExpiresISO: iss.ExpiresAt.UTC().Format(time.RFC3339),
		Validity: validity(voicecode.Validity)}
	if iss.VoiceCode != "" {
		d.Groups = strings.Split(iss.VoiceCode, "-")
	}
	c.render(w, r, http.StatusOK, "reveal", rq, d)
}

// needFresh asks for a new sign-in before a code is revealed.
func (c *Console) needFresh(w http.ResponseWriter, r *http.Request, rq *request, id string) {
	c.render(w, r, http.StatusUnauthorized, "fresh", rq, struct{ Next string }{Next: "/devices/" + id})
}

// hold puts the device on hold (supervisors).
func (c *Console) hold(w http.ResponseWriter, r *http.Request, rq *request) {
	c.holdOrRelease(w, r, rq, true)
}

// release lifts the device's hold (supervisors).
func (c *Console) release(w http.ResponseWriter, r *http.Request, rq *request) {
	c.holdOrRelease(w, r, rq, false)
}

func (c *Console) holdOrRelease(w http.ResponseWriter, r *http.Request, rq *request, hold bool) {
	id := r.PathValue("id")
	reason := r.PostFormValue("reason")
	var err error
	if hold {
		_, err = c.svc.HoldDevice(r.Context(), rq.Actor, id, reason)
	} else {
		err = c.svc.ReleaseDevice(r.Context(), rq.Actor, id, reason)
	}
	if err != nil {
		c.refusedOnDevice(w, r, rq, err, true, func(d *deviceData, p *problem) { d.Problem = p })
		return
	}
	http.Redirect(w, r, "/devices/"+id, http.StatusSeeOther)
}

// validity says how long a code lives, in hours when it is whole hours.
func validity(d time.Duration) string {
	if d >= 2*time.Hour && d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	}
	return strconv.Itoa(int(d/time.Minute)) + " minutes"
}

// refusedOnDevice answers a refused act of the device page with the page
// again, the refusal placed by put next to the form it concerns. An
// internal error, or a permission refusal when hardFail is set, is the
// error page instead.
func (c *Console) refusedOnDevice(w http.ResponseWriter, r *http.Request, rq *request, err error, hardFail bool,
	put func(*deviceData, *problem)) {
	p := asProblem(err)
	if p.Status == http.StatusInternalServerError || (hardFail && p.Status == http.StatusForbidden) {
		c.fail(w, r, rq, err)
		return
	}
	d, lerr := c.loadDevice(r, rq, "")
	if lerr != nil {
		c.fail(w, r, rq, lerr)
		return
	}
	put(&d, &p)
	c.render(w, r, p.Status, "device", rq, d)
}
