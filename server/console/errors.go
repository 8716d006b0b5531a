package console

import (
	"errors"
	"net/http"

	"github.com/dvrhotline/hotline/server"
)

// floorError is how the console answers one server.Code: the HTTP status
// and what to do next, in the support floor's words.
type floorError struct {
	status int
	next   string
}

// statusTable is the one mapping from the service's error codes to HTTP
// statuses. A server.Code missing here is a bug and answers as EInternal.
var statusTable = map[server.Code]floorError{
	server.EInvalid:         {http.StatusBadRequest, "Correct the form and send it again."},
	server.ENotFound:        {http.StatusNotFound, "Check the serial with the caller (it is on the label under the DVR), or pick a near match."},
	server.EConflict:        {http.StatusConflict, "Start again from the device page."},
	server.EUnauthenticated: {http.StatusUnauthorized, "Sign in again."},
	server.EPermission:      {http.StatusForbidden, "Your role does not allow this. Ask a supervisor."},
	server.ELimit:           {http.StatusTooManyRequests, "Do not promise the caller a code now: ask a supervisor to issue over the limit, or call back after the time shown."},
	server.EPrecondition:    {http.StatusConflict, "Do not issue a code. Tell the caller the case needs a supervisor, and pass it on."},
	server.EUnavailable:     {http.StatusServiceUnavailable, "Wait a moment and try again."},
	server.EInternal:        {http.StatusInternalServerError, "Try again; if it happens again, tell IT (the server log has the details)."},
}

// reasonTable refines statusTable for the refusals whose next step is
// not their code's: the e-mail route's throttles and code entries. The
// status stays the code's; only what to do next changes.
var reasonTable = map[server.Reason]string{
	server.ReasonNoEmailRegistered:    "No e-mail address is registered for this device: check the caller another way (proof of purchase, installer's account) and read the code out.",
	server.ReasonSendsPerDevice:       "Do not send another code: ask the caller to look for the ones already sent (the newest counts; also in the spam folder), or check them another way.",
	server.ReasonSendsPerAgent:        "Stop sending codes and pass the call to a supervisor.",
	server.ReasonNoOwnerCode:          "Send a new code, then ask the caller to read the code in the newest message.",
	server.ReasonOwnerCodeMismatch:    "Ask the caller to read the code again, digit by digit, from the newest message. Never say what the code should be.",
	server.ReasonOwnerCodeNotVerified: "Send a code to the owner's e-mail and enter what the caller reads back first, or choose the method you did check.",
	server.ReasonGuessesPerDevice:     "Stop checking this caller: no more contacts or codes on this device today. Pass the call to a supervisor with a proof of purchase.",
	server.ReasonGuessesPerAgent:      "Stop checking callers and ask a supervisor: your wrong checks this hour hold your further ones.",
	server.ReasonSupervisorRequired:   "Do not issue a code: pass the call to a supervisor, who checks the caller again and issues it.",
}

// internalMessage is all staff see of an internal error.
const internalMessage = "Something went wrong on our side."

// problem is an error as a page shows it.
type problem struct {
	Status  int
	Message string
	Next    string
	Field   string
	Near    []string
	Reason  server.Reason
	Retry   string
}

// asProblem maps err through statusTable and reasonTable; internal errors
// lose their text.
func asProblem(err error) problem {
	var e *server.Error
	if !errors.As(err, &e) {
		e = server.Internal(err, "answering the console")
	}
	fe, ok := statusTable[e.Code]
	if !ok {
		fe = statusTable[server.EInternal]
		e = server.Internal(e, "answering the console")
	}
	p := problem{Status: fe.status, Message: e.Message, Next: fe.next, Field: e.Field, Near: e.NearMatches, Reason: e.ReasonOf()}
	if next, ok := reasonTable[p.Reason]; ok {
		p.Next = next
	}
	if fe.status == http.StatusInternalServerError {
		p.Message = internalMessage
	}
	if !e.RetryAfter.IsZero() {
		p.Retry = e.RetryAfter.UTC().Format("2006-01-02 15:04 UTC")
	}
	return p
}
