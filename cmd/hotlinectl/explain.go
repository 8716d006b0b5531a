package main

// What hotlinectl says when a call fails: what happened, and what to do
// next. The hint is chosen from the answer's google.rpc.ErrorInfo reason
// (enum hotline.v1.ErrorReason) and metadata, never from the message,
// which is for people and may change; the status code decides only when
// there is no ErrorInfo, or one with a reason this build does not know.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// errorDomain is the ErrorInfo domain of the hotline.v1 API's errors.
const errorDomain = "hotline.v1"

// roleFor is the role a command needs, for the hints when the server does
// not list the roles.
func roleFor(name string) string {
	switch name {
	case "devices add", "devices import":
		return "provisioner"
	case "hold", "release":
		return "supervisor"
	case "audit query", "audit export", "audit summary", "audit checkpoint", "audit verify":
		return "auditor (or supervisor)"
	}
	return "agent"
}

// flagFor maps an API field to the command-line argument that sets it.
var flagFor = map[string]string{
	"serial":              "the SERIAL argument",
	"query":               "the QUERY argument",
	"claimed_contact":     "the CONTACT argument",
	"ticket":              "--ticket",
	"verification_method": "--verified-by",
	"verification_note":   "--note",
	"override_reason":     "--override-reason",
	"request_id":          "--request-id",
	"model":               "--model",
	"owner_contact":       "--owner",
	"firmware":            "--firmware",
	"key_generation":      "--key-generation",
	"reason":              "--reason",
	"page_size":           "--limit",
	"page_token":          "--page-token",
	"start_time":          "--since",
	"end_time":            "--until",
	"actor":               "--actor",
	"action":              "--action",
	"outcome":             "--outcome",
	"checkpoint":          "--checkpoint",
	// devices import
	"options.key_generation": "--key-generation",
	"options.batch_size":     "--batch",
	"options.format":         "--format",
	"options.file_name":      "the FILE argument",
}

// explain turns an RPC error into what happened and what to do next.
func (c *cmd) explain(err error) string {
	var cut importCutOff
	if errors.As(err, &cut) {
		out := c.explain(cut.error)
		if cut.mayHaveCommitted() {
			out += "\n  the rows sent before the failure may be imported, in whole batches: run the same command again to complete the import (rows already registered count as unchanged)"
		}
		return out
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Sprintf("hotlinectl %s: %s", c.name, printable(err.Error())) // a local failure: the file, the disk
	}
	out := fmt.Sprintf("hotlinectl %s: %s: %s", c.name, codeWords(st.Code()), printable(st.Message()))
	if hint := c.hint(st, time.Now()); hint != "" {
		out += "\n  next: " + hint
	}
	return out
}

// errorInfo returns st's ErrorInfo of the hotline.v1 domain, or nil when it
// carries none: the server was not reached (or an older server, or a proxy,
// answered).
func errorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == errorDomain {
			return ei
		}
	}
	return nil
}

// reasonOf maps an ErrorInfo reason (an ErrorReason name without its
// ERROR_REASON_ prefix) to the enum; a reason this build does not know is
// ERROR_REASON_UNSPECIFIED.
func reasonOf(ei *errdetails.ErrorInfo) hotlinev1.ErrorReason {
	if ei.GetReason() == "" {
		return hotlinev1.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return hotlinev1.ErrorReason(hotlinev1.ErrorReason_value["ERROR_REASON_"+ei.GetReason()])
}

// hint is what to do next after the refusal st, at now (whose location
// the retry times are shown in).
func (c *cmd) hint(st *status.Status, now time.Time) string {
	ei := errorInfo(st)
	if ei == nil {
		return c.codeHint(st, nil, now, false)
	}
	md := ei.GetMetadata()
	retry := retryAt(st, md, now)
	switch reasonOf(ei) {
	case hotlinev1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:
		if f, ok := flagFor[md["field"]]; ok {
			return "fix " + f
		}
		return ""
	case hotlinev1.ErrorReason_ERROR_REASON_DEVICE_NOT_FOUND:
		return "check the serial on the label below the QR code, or look it up by the device id alone"
	case hotlinev1.ErrorReason_ERROR_REASON_NOT_FOUND:
		if f := md["field"]; f == "serial" || f == "query" {
			return "check the serial on the label below the QR code, or look it up by the device id alone"
		}
		return ""
	case hotlinev1.ErrorReason_ERROR_REASON_DEVICE_EXISTS:
		return "it is already registered: look it up with hotlinectl lookup"
	case hotlinev1.ErrorReason_ERROR_REASON_CONFLICT:
		return "it conflicts with what is registered: look it up with hotlinectl lookup"
	case hotlinev1.ErrorReason_ERROR_REASON_REQUEST_ID_REUSED:
		return "this --request-id was used for another request: give a new one, or leave it out"
	case hotlinev1.ErrorReason_ERROR_REASON_UNAUTHENTICATED:
		return fmt.Sprintf("set HOTLINE_TOKEN (or --token): hotline-server token --subject you --role %s", roleFor(c.name))
	case hotlinev1.ErrorReason_ERROR_REASON_ROLE_NOT_ALLOWED:
		if f, ok := flagFor[md["field"]]; ok {
			return fmt.Sprintf("your role may not give %s: leave it out, or ask a colleague whose role may", f)
		}
		roles := roleFor(c.name)
		if md["roles"] != "" {
			roles = strings.Join(strings.Split(md["roles"], ","), " or ")
		}
		return fmt.Sprintf("this needs a token with the role %s; ask for one, or a colleague who has it", roles)
	case hotlinev1.ErrorReason_ERROR_REASON_OVERRIDE_NOT_ALLOWED:
		return "drop --override-reason, or ask a supervisor to issue"
	case hotlinev1.ErrorReason_ERROR_REASON_LIMIT_PER_DEVICE:
		return "ask a supervisor to issue with --override-reason" + limitUse(md, "this device") + orRetry(retry)
	case hotlinev1.ErrorReason_ERROR_REASON_LIMIT_PER_AGENT:
		return "you reached your own issuance limit" + limitUse(md, "you") +
			": ask a colleague to issue, or a supervisor with --override-reason" + orRetry(retry)
	case hotlinev1.ErrorReason_ERROR_REASON_OWNER_GUESSES_PER_DEVICE:
		return "too many wrong guesses of this device's owner: check ownership another way (--verified-by proof-of-purchase), " + retryOr(retry, "or retry later")
	case hotlinev1.ErrorReason_ERROR_REASON_OWNER_GUESSES_PER_AGENT:
		return "you made too many wrong owner guesses: take a break or hand the call to a colleague; " + retryOr(retry, "retry later")
	case hotlinev1.ErrorReason_ERROR_REASON_SUPERVISOR_REQUIRED:
		return "this device had wrong owner guesses since its last code: a supervisor must issue the next one (with --override-reason)"
	case hotlinev1.ErrorReason_ERROR_REASON_NO_EMAIL_REGISTERED:
		return "the owner registered no e-mail address: verify the caller another way (--verified-by proof-of-purchase, installer-account or other)"
	case hotlinev1.ErrorReason_ERROR_REASON_CODES_PER_DEVICE:
		return "enough codes were mailed to this owner for now: ask the caller to check their mailbox (and spam folder); " + retryOr(retry, "retry later")
	case hotlinev1.ErrorReason_ERROR_REASON_CODES_PER_AGENT:
		return "you mailed enough codes for now: " + retryOr(retry, "retry later") + ", or hand the call to a colleague"
	case hotlinev1.ErrorReason_ERROR_REASON_NO_OWNER_CODE:
		return "no code is waiting for this device: send one first (hotlinectl send-code SERIAL)"
	case hotlinev1.ErrorReason_ERROR_REASON_OWNER_CODE_MISMATCH:
		return "that is not the code that was sent: ask the caller to read it again, digit by digit"
	case hotlinev1.ErrorReason_ERROR_REASON_OWNER_CODE_NOT_VERIFIED:
		return "no verified e-mail code of yours for this device: run hotlinectl send-code and verify-code first, or choose another --verified-by"
	case hotlinev1.ErrorReason_ERROR_REASON_STREAM_TIMEOUT:
		return "the server ended the stream: narrow it (--since/--until, a filter) and write it to a file as it comes"
	case hotlinev1.ErrorReason_ERROR_REASON_DEVICE_ON_HOLD:
		return "the device is on hold: a supervisor must release it first (hotlinectl release SERIAL --reason R)"
	case hotlinev1.ErrorReason_ERROR_REASON_SEQUENCE_WRAP:
		return "this device had many codes in this 10-minute slot: " + retryOr(retry, "retry in a few minutes") + " (with the same --request-id)"
	case hotlinev1.ErrorReason_ERROR_REASON_CONTACT_RECENTLY_CHANGED:
		return "the owner contact changed recently: confirm the owner another way and ask a supervisor to issue with --override-reason" + orRetry(retry)
	case hotlinev1.ErrorReason_ERROR_REASON_DEVICE_CAP:
		return "no one may issue more codes for this device now, not even a supervisor" + limitUse(md, "this device") + orRetry(retry)
	case hotlinev1.ErrorReason_ERROR_REASON_ISSUANCE_EXPIRED:
		return "that issuance has expired: issue a new one without --request-id (a fresh id)"
	case hotlinev1.ErrorReason_ERROR_REASON_IMPORT_FINISHED:
		return "that import is finished: run the command again to begin a new one (rows already registered count as unchanged)"
	case hotlinev1.ErrorReason_ERROR_REASON_IMPORT_NOT_YOURS:
		return "that import was begun by another staff member: run the command again to begin your own"
	case hotlinev1.ErrorReason_ERROR_REASON_AUDIT_UNAVAILABLE:
		if retry != "" {
			return "nothing is sealed yet: retry at " + retry
		}
		return "ask the operator: the server must run with the keyring's audit key (it seals and verifies the log)"
	case hotlinev1.ErrorReason_ERROR_REASON_DATABASE_BUSY:
		return "the server's database was busy: " + retryOr(retry, "retry in a moment") + " (an issue retried with the same --request-id is safe)"
	case hotlinev1.ErrorReason_ERROR_REASON_UNAVAILABLE:
		return retryOr(retry, "retry in a moment")
	case hotlinev1.ErrorReason_ERROR_REASON_INTERNAL:
		return "the server failed: retry, and report it with the time if it persists"
	}
	// FAILED_PRECONDITION (the message says which state), or a reason this
	// build does not know: the code, knowing the server answered.
	return c.codeHint(st, md, now, true)
}

// codeHint is the hint from st's code (and the ErrorInfo metadata md, if
// any). answered says the server itself refused (the status carries an
// ErrorInfo): then Unavailable is a request to retry, not a failure to
// reach it.
func (c *cmd) codeHint(st *status.Status, md map[string]string, now time.Time, answered bool) string {
	switch st.Code() {
	case codes.Unauthenticated:
		return fmt.Sprintf("set HOTLINE_TOKEN (or --token): hotline-server token --subject you --role %s", roleFor(c.name))
	case codes.PermissionDenied:
		return fmt.Sprintf("this needs a token with the role %s; ask for one, or a colleague who has it", roleFor(c.name))
	case codes.InvalidArgument:
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					if f, ok := flagFor[v.GetField()]; ok {
						return "fix " + f
					}
				}
			}
		}
	case codes.NotFound:
		return "check the serial on the label below the QR code, or look it up by the device id alone"
	case codes.ResourceExhausted:
		return "ask a supervisor to issue with --override-reason" + orRetry(retryAt(st, md, now))
	case codes.AlreadyExists:
		return "it is already registered: look it up with hotlinectl lookup"
	case codes.Unavailable:
		if answered {
			return retryOr(retryAt(st, md, now), "retry in a moment")
		}
		return c.unreachableHint()
	case codes.DeadlineExceeded:
		return "the server did not answer in time: retry (an issue retried with the same --request-id is safe)"
	case codes.Internal:
		return "the server failed: retry, and report it with the time if it persists"
	}
	return ""
}

// unreachableHint is the hint for a call that never reached the server,
// by how hotlinectl dialled it (the transport's message is not parsed).
func (c *cmd) unreachableHint() string {
	if c.caFile == "" && netaddr.IsLoopback(c.addr) {
		return fmt.Sprintf("is hotline-server running at %s? (make run; or set HOTLINE_ADDR); then retry", c.addr)
	}
	return fmt.Sprintf("could not reach hotline-server at %s over TLS: check HOTLINE_ADDR, that the server listens with TLS there, and --ca-file if its certificate is from a private CA; then retry", c.addr)
}

// retryAt is when the server says to retry, shown in now's location:
// metadata "retry_at" (RFC 3339), else the RetryInfo delay; "" when
// neither is there. A time on another day than now carries its date.
func retryAt(st *status.Status, md map[string]string, now time.Time) string {
	var at time.Time
	if t, err := time.Parse(time.RFC3339, md["retry_at"]); err == nil {
		at = t
	} else {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				at = now.Add(ri.GetRetryDelay().AsDuration())
			}
		}
	}
	if at.IsZero() {
		return ""
	}
	at = at.In(now.Location())
	if y, m, d := at.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return at.Format("15:04:05 MST")
	}
	return at.Format("2006-01-02 15:04 MST")
}

// orRetry is ", or retry at T", or "" without a time.
func orRetry(at string) string {
	if at == "" {
		return ""
	}
	return ", or retry at " + at
}

// retryOr is "retry at T", or otherwise without a time.
func retryOr(at, otherwise string) string {
	if at == "" {
		return otherwise
	}
	return "retry at " + at
}

// limitUse is " (who had COUNT of MAX in WINDOW)" from a limit's metadata,
// or "" when the server did not send them.
func limitUse(md map[string]string, who string) string {
	count, cerr := strconv.Atoi(md["count"])
	most, merr := strconv.Atoi(md["max"])
	if cerr != nil || merr != nil || most <= 0 {
		return ""
	}
	out := fmt.Sprintf(" (%s had %d of %d", who, count, most)
	if w, err := time.ParseDuration(md["window"]); err == nil && w > 0 {
		out += " in " + shortDuration(w)
	}
	return out + ")"
}

// shortDuration spells d without zero tails: 24h, 10m, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// codeWords spells a status code in lower-case words: "permission denied".
func codeWords(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
