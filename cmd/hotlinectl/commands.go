package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// A command registers its flags and returns the function that runs it.
type command func(fs *flag.FlagSet) func(c *cmd, pos []string) error

var commands = map[string]command{
	"devices add":      devicesAdd,
	"devices import":   devicesImport,
	"lookup":           lookup,
	"check-owner":      checkOwner,
	"issue":            issue,
	"history":          history,
	"hold":             holdCmd(true),
	"release":          holdCmd(false),
	"audit query":      auditQuery,
	"audit export":     auditExport,
	"audit summary":    auditSummary,
	"audit checkpoint": auditCheckpoint,
	"audit verify":     auditVerify,
	"keys jwks":        keysJWKS,
}

func devicesAdd(fs *flag.FlagSet) func(*cmd, []string) error {
	model := fs.String("model", "", "model code, e.g. WBXHD082S2T")
	owner := fs.String("owner", "", "owner e-mail or phone (optional: a DVR may have no owner yet)")
	firmware := fs.String("firmware", "", "firmware version the factory flashed, e.g. V4.0.1")
	gen := fs.Int("key-generation", 0, "key generation the device key was derived under (0: current)")
	return func(c *cmd, pos []string) error {
		if err := need(pos, 1, "SERIAL"); err != nil {
			return err
		}
		if *model == "" || *firmware == "" {
			return usagef("--model and --firmware are required")
		}
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewDeviceServiceClient(c.conn).RegisterDevice(ctx, &hotlinev1.RegisterDeviceRequest{
			Serial: pos[0], Model: *model, OwnerContact: *owner, Firmware: *firmware, KeyGeneration: int32(*gen),
		})
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(resp.GetDevice(), nil)
		}
		printf(c.stdout, "registered %s\n", resp.GetDevice().GetSerial())
		return nil
	}
}

func lookup(fs *flag.FlagSet) func(*cmd, []string) error {
	return func(c *cmd, pos []string) error {
		if len(pos) == 0 {
			return usagef("expected QUERY: a serial, device id or QR text")
		}
		ctx, cancel := c.ctx()
		defer cancel()
		// A serial read aloud may arrive as several words.
		resp, err := hotlinev1.NewDeviceServiceClient(c.conn).LookupDevice(ctx, &hotlinev1.LookupDeviceRequest{Query: strings.Join(pos, " ")})
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(resp.GetDevice(), map[string]any{
				"recent_issuance_count": resp.GetRecentIssuanceCount(),
				"per_device_limit":      resp.GetPerDeviceLimit(),
			})
		}
		d := resp.GetDevice()
		w := table(c.stdout)
		w.Printf("serial\t%s\n", d.GetSerial())
		w.Printf("device id\t%s\n", d.GetDeviceId())
		w.Printf("model\t%s (%s)\n", d.GetModel().GetCode(), d.GetModel().GetDescription())
		w.Printf("produced\t%s\n", d.GetProductionDate().AsTime().Format(time.DateOnly))
		w.Printf("firmware\t%s\n", orDash(d.GetFirmware()))
		w.Printf("owner\t%s\n", orDash(d.GetOwnerContactMasked()))
		if h := d.GetHold(); h != nil {
			w.Printf("hold\tON HOLD since %s by %s: %s\n", fmtTime(h.GetSince()), h.GetBy(), h.GetReason())
		} else {
			w.Printf("hold\tnone\n")
		}
		w.Printf("recent codes\t%d of %d allowed in the window\n", resp.GetRecentIssuanceCount(), resp.GetPerDeviceLimit())
		return w.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func checkOwner(fs *flag.FlagSet) func(*cmd, []string) error {
	return func(c *cmd, pos []string) error {
		if err := need(pos, 2, "SERIAL CONTACT"); err != nil {
			return err
		}
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewDeviceServiceClient(c.conn).CheckOwner(ctx, &hotlinev1.CheckOwnerRequest{Serial: pos[0], ClaimedContact: pos[1]})
		if err != nil {
			return err
		}
		if c.output == "json" {
			if err := c.printJSON(resp, nil); err != nil {
				return err
			}
		} else if resp.GetMatched() {
			fmt.Fprintln(c.stdout, "match: the contact is the registered owner's (use --verified-by owner-contact)")
		} else {
			fmt.Fprintln(c.stdout, "no match: verify ownership another way (proof of purchase, installer account)")
		}
		if !resp.GetMatched() {
			return noMatch{}
		}
		return nil
	}
}

// parseMethod reads --verified-by leniently: owner-contact,
// PROOF_OF_PURCHASE, verification_method_other...
func parseMethod(s string) (hotlinev1.VerificationMethod, bool) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	n = strings.TrimPrefix(n, "VERIFICATION_METHOD_")
	switch n {
	case "OWNER_CONTACT", "OWNER", "CONTACT":
		n = "OWNER_CONTACT_MATCHED"
	case "PROOF", "PURCHASE", "RECEIPT", "INVOICE":
		n = "PROOF_OF_PURCHASE"
	case "INSTALLER":
		n = "INSTALLER_ACCOUNT"
	case "EMAIL_CODE", "OWNER_EMAIL", "CODE":
		n = "OWNER_EMAIL_CODE"
	}
	v, ok := hotlinev1.VerificationMethod_value["VERIFICATION_METHOD_"+n]
	if !ok || v == 0 {
		return 0, false
	}
	return hotlinev1.VerificationMethod(v), true
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func issue(fs *flag.FlagSet) func(*cmd, []string) error {
	ticket := fs.String("ticket", "", "support ticket reference (required)")
	method := fs.String("verified-by", "", "how ownership was checked: owner-contact, email-code, proof-of-purchase, installer-account, other (required)")
	note := fs.String("note", "", "what was checked (required with other)")
	override := fs.String("override-reason", "", "supervisor: why to issue over a limit")
	requestCode := fs.String("request-code", "", "the request code a DVR whose clock is not set shows (XXXXX-XXXXX): the voice code is bound to it")
	requestID := fs.String("request-id", "", "idempotency key; reuse it to retry safely (default: a fresh UUID)")
	deliver := fs.String("deliver", "voice", "voice (read it out), email (to the registered address only: not shown here) or both")
	return func(c *cmd, pos []string) error {
		if err := need(pos, 1, "SERIAL"); err != nil {
			return err
		}
		if *ticket == "" {
			return usagef("--ticket is required: the support ticket reference")
		}
		m, ok := parseMethod(*method)
		if !ok {
			return usagef("--verified-by %q: expected owner-contact, email-code, proof-of-purchase, installer-account or other", *method)
		}
		if m == hotlinev1.VerificationMethod_VERIFICATION_METHOD_OTHER && strings.TrimSpace(*note) == "" {
			return usagef("--verified-by other needs --note saying what was checked")
		}
		dl, ok := parseDelivery(*deliver)
		if !ok {
			return usagef("--deliver %q: expected voice, email or both", *deliver)
		}
		rid := *requestID
		if rid == "" {
			rid = newRequestID()
		}
		// Said before the call so that a timeout can be retried safely.
		printf(c.stderr, "request id %s (to retry safely: --request-id %s)\n", rid, rid)
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewRecoveryServiceClient(c.conn).IssueTemporaryPassword(ctx, &hotlinev1.IssueTemporaryPasswordRequest{
			RequestId: rid, Serial: pos[0], Ticket: *ticket, VerificationMethod: m,
			VerificationNote: *note, OverrideReason: *override, RequestCode: *requestCode,
			Delivery: dl,
		})
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(resp, map[string]any{"request_id": rid})
		}
		w := table(c.stdout)
		if m := resp.GetMail(); m != nil {
			w.Printf("e-mailed to\t%s (%s; hotlinectl deliveries SERIAL)\n", m.GetToMasked(), mailState(m))
		}
		if resp.GetVoiceCode() == "" {
			w.Printf("expires\t%s\n", fmtTime(resp.GetExpiresAt()))
			w.Printf("serial\t%s (code #%d)\n", resp.GetSerial(), resp.GetSequence())
			w.Printf("issuance\t%s\n", resp.GetIssuanceId())
			return w.Flush()
		}
		w.Printf("voice code\t%s\n", resp.GetVoiceCode())
		w.Printf("read as\t%s\n", resp.GetVoiceCodePhonetic())
		w.Printf("expires\t%s\n", fmtTime(resp.GetExpiresAt()))
		w.Printf("serial\t%s (code #%d)\n", resp.GetSerial(), resp.GetSequence())
		w.Printf("issuance\t%s\n", resp.GetIssuanceId())
		w.Printf("grant\t%s\n", resp.GetGrant())
		return w.Flush()
	}
}

// pageFlags are the paging flags of the list commands: --limit items in
// all (fetched in pages of at most that many: the server clamps a page to
// its maximum), --page-token to continue a list, --all to follow every
// next page token to the end.
type pageFlags struct {
	limit *int
	token *string
	all   *bool
}

func addPageFlags(fs *flag.FlagSet, what string, limit int) pageFlags {
	return pageFlags{
		limit: fs.Int("limit", limit, "most "+what+" to print (fetched in pages)"),
		token: fs.String("page-token", "", "continue from a previous next_page_token"),
		all:   fs.Bool("all", false, "print every "+strings.TrimSuffix(what, "s")+", following the next page tokens to the end (--limit ignored)"),
	}
}

// follow calls fetch with the page size to ask for and the page token,
// starting from --page-token, until --limit items are read (or, with --all,
// every one) or the list ends. It returns the token of what is left, empty
// when nothing is.
func (p pageFlags) follow(fetch func(size int32, token string) (n int, next string, err error)) (string, error) {
	if !*p.all && *p.limit < 1 {
		return "", usagef("--limit %d: expected 1 or more (or --all)", *p.limit)
	}
	token, read := *p.token, 0
	for *p.all || read < *p.limit {
		size := int32(math.MaxInt32) // the server clamps it to its maximum page
		if !*p.all {
			size = int32(min(*p.limit-read, math.MaxInt32))
		}
		n, next, err := fetch(size, token)
		if err != nil {
			return "", err
		}
		read, token = read+n, next
		if token == "" {
			break
		}
	}
	return token, nil
}

func history(fs *flag.FlagSet) func(*cmd, []string) error {
	pf := addPageFlags(fs, "issuances", 20)
	return func(c *cmd, pos []string) error {
		if err := need(pos, 1, "SERIAL"); err != nil {
			return err
		}
		rc := hotlinev1.NewRecoveryServiceClient(c.conn)
		resp := &hotlinev1.ListIssuancesResponse{}
		next, err := pf.follow(func(size int32, token string) (int, string, error) {
			ctx, cancel := c.ctx()
			defer cancel()
			page, err := rc.ListIssuances(ctx, &hotlinev1.ListIssuancesRequest{Serial: pos[0], PageSize: size, PageToken: token})
			resp.Issuances = append(resp.Issuances, page.GetIssuances()...)
			return len(page.GetIssuances()), page.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		resp.NextPageToken = next
		if c.output == "json" {
			return c.printJSON(resp, nil)
		}
		if len(resp.GetIssuances()) == 0 {
			fmt.Fprintln(c.stdout, "no temporary passwords issued for this device")
			return nil
		}
		w := table(c.stdout)
		fmt.Fprintln(w, "SEQ\tISSUED\tEXPIRES\tBY\tTICKET\tVERIFIED BY\tOVERRIDE")
		for _, i := range resp.GetIssuances() {
			w.Printf("%d\t%s\t%s\t%s (%s)\t%s\t%s\t%s\n", i.GetSequence(), fmtTime(i.GetIssuedAt()), fmtTime(i.GetExpiresAt()),
				i.GetActor(), roleName(i.GetActorRole()), i.GetTicket(), methodName(i.GetVerificationMethod()), orDash(i.GetOverrideReason()))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if next != "" {
			printf(c.stderr, "more issuances: --page-token %s (or --all)\n", next)
		}
		return nil
	}
}

func roleName(r hotlinev1.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

func methodName(m hotlinev1.VerificationMethod) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(m.String(), "VERIFICATION_METHOD_"), "_", "-"))
}

func holdCmd(hold bool) command {
	return func(fs *flag.FlagSet) func(*cmd, []string) error {
		reason := fs.String("reason", "", "why (required)")
		return func(c *cmd, pos []string) error {
			if err := need(pos, 1, "SERIAL"); err != nil {
				return err
			}
			if strings.TrimSpace(*reason) == "" {
				return usagef("--reason is required")
			}
			ctx, cancel := c.ctx()
			defer cancel()
			dc := hotlinev1.NewDeviceServiceClient(c.conn)
			if hold {
				resp, err := dc.HoldDevice(ctx, &hotlinev1.HoldDeviceRequest{Serial: pos[0], Reason: *reason})
				if err != nil {
					return err
				}
				if c.output == "json" {
					return c.printJSON(resp, nil)
				}
				printf(c.stdout, "on hold since %s: no temporary password will be issued until released\n", fmtTime(resp.GetHold().GetSince()))
				return nil
			}
			resp, err := dc.ReleaseDevice(ctx, &hotlinev1.ReleaseDeviceRequest{Serial: pos[0], Reason: *reason})
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(resp, nil)
			}
			fmt.Fprintln(c.stdout, "released")
			return nil
		}
	}
}

// parseWhen reads an RFC 3339 time, a date, or a duration ago ("24h").
func parseWhen(flagName, s string, now time.Time) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, usagef("--%s %q: expected an RFC 3339 time (2026-01-02T15:04:05Z), a date (2026-01-02) or a duration ago (24h)", flagName, s)
}

func auditQuery(fs *flag.FlagSet) func(*cmd, []string) error {
	af := addAuditFlags(fs)
	pf := addPageFlags(fs, "events", defaultLimit)
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q: filters are flags, e.g. --serial", pos[0])
		}
		req := &hotlinev1.QueryEventsRequest{Serial: *af.serial, Actor: *af.actor, Action: *af.action}
		var err error
		if req.Outcome, req.StartTime, req.EndTime, err = af.parsed(time.Now()); err != nil {
			return err
		}
		ac := hotlinev1.NewAuditServiceClient(c.conn)
		all := &hotlinev1.QueryEventsResponse{}
		all.NextPageToken, err = pf.follow(func(size int32, token string) (int, string, error) {
			req.PageSize, req.PageToken = size, token
			ctx, cancel := c.ctx()
			defer cancel()
			resp, err := ac.QueryEvents(ctx, req)
			all.Events = append(all.Events, resp.GetEvents()...)
			return len(resp.GetEvents()), resp.GetNextPageToken(), err
		})
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(all, nil)
		}
		w := table(c.stdout)
		fmt.Fprintln(w, "TIME\tACTOR\tROLE\tACTION\tOUTCOME\tSERIAL\tDETAIL")
		for _, e := range all.GetEvents() {
			detail := e.GetDetail()
			for _, kv := range [][2]string{{"ticket", e.GetTicket()}, {"reason", e.GetReason()}, {"issuance", e.GetIssuanceId()}} {
				if kv[1] != "" {
					detail = strings.TrimSpace(detail + " " + kv[0] + "=" + kv[1])
				}
			}
			w.Printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(e.GetTime()), e.GetActor(), roleName(e.GetRole()), e.GetAction(),
				strings.ToLower(strings.TrimPrefix(e.GetOutcome().String(), "OUTCOME_")), orDash(e.GetSerial()), detail)
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if all.NextPageToken != "" {
			printf(c.stderr, "more events: --page-token %s (or --all)\n", all.NextPageToken)
		}
		return nil
	}
}

func keysJWKS(fs *flag.FlagSet) func(*cmd, []string) error {
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewKeyServiceClient(c.conn).GetGrantKeys(ctx, &hotlinev1.GetGrantKeysRequest{})
		if err != nil {
			return err
		}
		out := resp.GetJwksJson()
		if !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		_, err = fmt.Fprint(c.stdout, out)
		return err
	}
}
