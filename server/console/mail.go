package console

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/dvrhotline/hotline/server"
)

// deliveriesShown is how many of a device's e-mails its page lists.
const deliveriesShown = 10

// withMailRoute adds the e-mail route to a device page: the masked
// address and the method it offers, and the device's deliveries when the
// role may read them.
func (c *Console) withMailRoute(r *http.Request, rq *request, d *deviceData) error {
	dev := d.View.Device
	if strings.Contains(dev.OwnerContact, "@") {
		d.Email = dev.OwnerContact
		d.Methods = append([]methodOption{methodOptions[0], emailMethod}, methodOptions[1:]...)
	}
	d.CodeValidity = validity(c.svc.Verify.WithDefaults().CodeValidity)
	if !server.Allowed(rq.Actor.Role, server.ActionMailStatus) {
		return nil
	}
	ds, err := c.svc.MailStatuses(r.Context(), rq.Actor, dev.Serial, deliveriesShown)
	if err != nil {
		return err
	}
	d.Deliveries = ds
	return nil
}

// showSent marks the owner-code message mailID, when it is one of the
// page's deliveries, as the code just sent.
func (c *Console) showSent(d *deviceData, mailID string) {
	for i, m := range d.Deliveries {
		if m.ID == mailID && m.Kind == server.MailOwnerCode {
			d.CodeSent = &d.Deliveries[i]
			d.CodeExpires = m.CreatedAt.Add(c.svc.Verify.WithDefaults().CodeTTL).UTC().Format("2006-01-02 15:04 UTC")
			return
		}
	}
}

// sendOwnerCode mails a one-time code to the device's registered address
// and shows the device page with the message's state (a reload shows the
// page again, and sends nothing).
func (c *Console) sendOwnerCode(w http.ResponseWriter, r *http.Request, rq *request) {
	id := r.PathValue("id")
	sent, err := c.svc.SendOwnerCode(r.Context(), rq.Actor, id)
	if err != nil {
		c.ownerCodeRefused(w, r, rq, err)
		return
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"?sent="+url.QueryEscape(sent.Mail.ID)+"#owner-code", http.StatusSeeOther)
}

// verifyOwnerCode checks the code the caller read back; a match chooses
// the owner-email-code method on the issue form.
func (c *Console) verifyOwnerCode(w http.ResponseWriter, r *http.Request, rq *request) {
	err := c.svc.VerifyOwnerCode(r.Context(), rq.Actor, r.PathValue("id"), r.PostFormValue("owner_code"))
	if err != nil {
		c.ownerCodeRefused(w, r, rq, err)
		return
	}
	d, err := c.loadDevice(r, rq, "")
	if err != nil {
		c.fail(w, r, rq, err)
		return
	}
	d.Verified, d.Form.Method = "code", server.VerifyOwnerEmailCode
	c.render(w, r, http.StatusOK, "device", rq, d)
}

// ownerCodeRefused shows the device page with the refusal of sending or
// entering a code next to those forms.
func (c *Console) ownerCodeRefused(w http.ResponseWriter, r *http.Request, rq *request, err error) {
	c.refusedOnDevice(w, r, rq, err, false, func(d *deviceData, p *problem) { d.CodeProblem = p })
}

// readDelivery reads the issue form's delivery; an unreadable one is
// passed on as invalid for the service to refuse by name.
func readDelivery(v string) server.Delivery {
	if v == "" {
		return server.DeliveryVoice
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return server.Delivery(n)
}

// mailState is a delivery's state in the support floor's words.
func mailState(m server.MailStatus) string {
	switch m.State {
	case server.MailQueued:
		if m.Attempts > 0 {
			return "queued again after a temporary failure (attempt " + strconv.Itoa(m.Attempts) + ")"
		}
		return "queued, not sent yet"
	case server.MailSending:
		return "being sent"
	case server.MailSent:
		return "sent"
	case server.MailFailed:
		return "failed"
	}
	return string(m.State)
}

var mailKinds = map[server.MailKind]string{server.MailOwnerCode: "verification code", server.MailIssuance: "temporary password"}

// addressRE finds e-mail addresses in an SMTP server's reply.
var addressRE = regexp.MustCompile(`[^\s<>"'(),;:\[\]]+@[^\s<>"'(),;:\[\]]+`)

// maskAddresses masks the addresses an SMTP reply may quote ("550 <jane@…>:
// no such mailbox"), so that staff see no more of the owner's address
// than its mask.
func maskAddresses(s string) string {
	return addressRE.ReplaceAllStringFunc(s, server.MaskContact)
}
