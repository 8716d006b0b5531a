package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// auditFlags are the filters audit query and audit export share.
type auditFlags struct {
	serial, actor, action, outcome, since, until *string
}

func addAuditFlags(fs *flag.FlagSet) auditFlags {
	return auditFlags{
		serial:  fs.String("serial", "", "device serial"),
		actor:   fs.String("actor", "", "staff member"),
		action:  fs.String("action", "", "action, e.g. recovery.issue"),
		outcome: fs.String("outcome", "", "success or refused"),
		since:   fs.String("since", "", "from (RFC 3339 time, date, or duration ago)"),
		until:   fs.String("until", "", "until (exclusive)"),
	}
}

// parsed returns the outcome and the time range.
func (f auditFlags) parsed(now time.Time) (o hotlinev1.Outcome, start, end *timestamppb.Timestamp, err error) {
	switch strings.ToLower(*f.outcome) {
	case "":
	case "success":
		o = hotlinev1.Outcome_OUTCOME_SUCCESS
	case "refused":
		o = hotlinev1.Outcome_OUTCOME_REFUSED
	default:
		return 0, nil, nil, usagef("--outcome %q: expected success or refused", *f.outcome)
	}
	if start, err = parseWhen("since", *f.since, now); err != nil {
		return 0, nil, nil, err
	}
	if end, err = parseWhen("until", *f.until, now); err != nil {
		return 0, nil, nil, err
	}
	return o, start, end, nil
}

// streamCtx is a call context without the per-call timeout, for an export
// that streams for as long as there are events.
func (c *cmd) streamCtx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return ctx, cancel
}

// exportProgress is how often audit export reports on stderr.
const exportProgress = 10000

func auditExport(fs *flag.FlagSet) func(*cmd, []string) error {
	af := addAuditFlags(fs)
	out := fs.String("out", "", "write to FILE (created when the export is complete) instead of standard output")
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q: filters are flags, e.g. --serial", pos[0])
		}
		o, start, end, err := af.parsed(time.Now())
		if err != nil {
			return err
		}
		w := c.stdout
		var tmp *os.File
		if *out != "" {
			// Written beside FILE and renamed when complete, so that a
			// FILE that exists is a whole export.
			tmp, err = os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".*.part")
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			w = tmp
		}
		ctx, cancel := c.streamCtx()
		defer cancel()
		stream, err := hotlinev1.NewAuditServiceClient(c.conn).ExportEvents(ctx, &hotlinev1.ExportEventsRequest{
			Serial: *af.serial, Actor: *af.actor, Action: *af.action, Outcome: o, StartTime: start, EndTime: end,
		})
		if err != nil {
			return err
		}
		n, err := writeJSONLines(w, stream.Recv, func(n int) {
			if n%exportProgress == 0 {
				printf(c.stderr, "exported %d events…\n", n)
			}
		})
		if err != nil {
			return err
		}
		if tmp != nil {
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), *out); err != nil {
				return err
			}
		}
		where := "standard output"
		if *out != "" {
			where = *out
		}
		printf(c.stderr, "exported %d events to %s, oldest first\n", n, where)
		return nil
	}
}

// writeJSONLines writes every event recv returns as one line of JSON (the
// API's field names) until the stream ends.
func writeJSONLines(w io.Writer, recv func() (*hotlinev1.ExportEventsResponse, error), progress func(n int)) (int, error) {
	opts := protojson.MarshalOptions{UseProtoNames: true}
	var (
		n   int
		buf []byte
	)
	for {
		chunk, err := recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		for _, e := range chunk.GetEvents() {
			buf, err = opts.MarshalAppend(buf[:0], e)
			if err != nil {
				return n, err
			}
			if _, err := w.Write(append(buf, '\n')); err != nil {
				return n, err
			}
			n++
			progress(n)
		}
	}
}

func auditSummary(fs *flag.FlagSet) func(*cmd, []string) error {
	since := fs.String("since", "", "from (RFC 3339 time, date, or duration ago; default 7 days before --until)")
	until := fs.String("until", "", "until, exclusive (default now)")
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		now := time.Now()
		req := &hotlinev1.SummarizeRequest{}
		var err error
		if req.StartTime, err = parseWhen("since", *since, now); err != nil {
			return err
		}
		if req.EndTime, err = parseWhen("until", *until, now); err != nil {
			return err
		}
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewAuditServiceClient(c.conn).Summarize(ctx, req)
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(resp, nil)
		}
		printf(c.stdout, "audit summary from %s to %s\n\n", fmtTime(resp.GetStartTime()), fmtTime(resp.GetEndTime()))
		w := table(c.stdout)
		fmt.Fprintln(w, "ISSUANCES PER AGENT PER DAY")
		if len(resp.GetIssuancesPerAgentDay()) == 0 {
			fmt.Fprintln(w, "  none")
		} else {
			fmt.Fprintln(w, "  DAY\tAGENT\tISSUED\tOVER A LIMIT")
			for _, d := range resp.GetIssuancesPerAgentDay() {
				w.Printf("  %s\t%s\t%d\t%d\n", d.GetDay(), d.GetActor(), d.GetCount(), d.GetOverrides())
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		w = table(c.stdout)
		fmt.Fprintln(w, "\nDEVICES ISSUED TWO OR MORE CODES")
		if len(resp.GetRepeatedDevices()) == 0 {
			fmt.Fprintln(w, "  none")
		} else {
			fmt.Fprintln(w, "  SERIAL\tISSUED\tBY AGENTS\tFIRST\tLAST")
			for _, d := range resp.GetRepeatedDevices() {
				w.Printf("  %s\t%d\t%d\t%s\t%s\n", d.GetSerial(), d.GetCount(), d.GetActors(), fmtTime(d.GetFirstTime()), fmtTime(d.GetLastTime()))
			}
			if resp.GetRepeatedDevicesTruncated() {
				fmt.Fprintln(w, "  … more devices: narrow the range")
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		w = table(c.stdout)
		fmt.Fprintln(w, "\nREFUSALS BY REASON")
		if len(resp.GetRefusals()) == 0 {
			fmt.Fprintln(w, "  none")
		} else {
			fmt.Fprintln(w, "  ACTION\tREASON\tREFUSED\tSTAFF")
			for _, r := range resp.GetRefusals() {
				w.Printf("  %s\t%s\t%d\t%d\n", r.GetAction(), orDash(r.GetReason()), r.GetCount(), r.GetActors())
			}
		}
		return w.Flush()
	}
}

func auditCheckpoint(fs *flag.FlagSet) func(*cmd, []string) error {
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		ctx, cancel := c.ctx()
		defer cancel()
		resp, err := hotlinev1.NewAuditServiceClient(c.conn).GetCheckpoint(ctx, &hotlinev1.GetCheckpointRequest{})
		if err != nil {
			return err
		}
		if c.output == "json" {
			return c.printJSON(resp, nil)
		}
		// Exactly the checkpoint's text: redirect it to a file kept away
		// from the database, and give it back to audit verify --checkpoint.
		_, err = io.WriteString(c.stdout, resp.GetText())
		return err
	}
}

// verifyFailed is audit verify's "the log failed verification".
type verifyFailed struct{ p *hotlinev1.VerifyProblem }

func (e verifyFailed) Error() string {
	where := ""
	if e.p.GetEventId() != 0 {
		where = fmt.Sprintf(": the first bad event is %d", e.p.GetEventId())
	}
	if e.p.GetSeq() != 0 {
		where += fmt.Sprintf(" (seq %d)", e.p.GetSeq())
	}
	return fmt.Sprintf("the audit log failed verification (%s)%s: %s", e.p.GetKind(), where, e.p.GetMessage())
}

func auditVerify(fs *flag.FlagSet) func(*cmd, []string) error {
	cpFile := fs.String("checkpoint", "", "a checkpoint kept outside the database (from audit checkpoint): also detect a rewrite of the history before it")
	return func(c *cmd, pos []string) error {
		if len(pos) != 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		req := &hotlinev1.VerifyLogRequest{}
		if *cpFile != "" {
			b, err := os.ReadFile(*cpFile)
			if err != nil {
				return usagef("--checkpoint: %v", err)
			}
			req.Checkpoint = string(b)
		}
		// Verification reads the whole log: allow it at least a minute.
		ctx, cancel := c.streamCtx()
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, max(c.timeout, time.Minute))
		defer cancelT()
		resp, err := hotlinev1.NewAuditServiceClient(c.conn).VerifyLog(ctx, req)
		if err != nil {
			return err
		}
		if c.output == "json" {
			if err := c.printJSON(resp, nil); err != nil {
				return err
			}
		} else {
			w := table(c.stdout)
			if resp.GetOk() {
				fmt.Fprintln(w, "result\tOK: the audit log verified")
			} else {
				p := resp.GetFirstProblem()
				w.Printf("result\tFAILED: %s\n", p.GetKind())
				w.Printf("first bad event\t%s\n", idOrDash(p.GetEventId()))
				w.Printf("at seq\t%s\n", idOrDash(p.GetSeq()))
				w.Printf("problem\t%s\n", p.GetMessage())
				for _, p := range resp.GetProblems()[min(1, len(resp.GetProblems())):] {
					w.Printf("also\t%s%s: %s\n", p.GetKind(), problemWhere(p), p.GetMessage())
				}
				if resp.GetProblemsTruncated() {
					w.Printf("also\tmore problems than the %d shown\n", len(resp.GetProblems()))
				}
			}
			if resp.GetWitnessCheckpointVerified() {
				fmt.Fprintln(w, "witness\tthe chain continues the last checkpoint published outside the database")
			}
			w.Printf("events\t%d (%d sealed, %d not sealed yet)\n", resp.GetEvents(), resp.GetSealed(), resp.GetUnsealed())
			w.Printf("checkpoints\t%d signed checkpoints verified\n", resp.GetCheckpointsVerified())
			switch {
			case *cpFile == "":
				fmt.Fprintln(w, "external\tnone given (--checkpoint FILE also detects a rewrite of the whole history)")
			case resp.GetExternalCheckpointVerified():
				w.Printf("external\t%s matches the chain\n", *cpFile)
			default:
				w.Printf("external\t%s does NOT match the chain\n", *cpFile)
			}
			w.Printf("head\t%s\n", resp.GetHead())
			w.Printf("took\t%d ms\n", resp.GetElapsedMs())
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if !resp.GetOk() {
			return verifyFailed{resp.GetFirstProblem()}
		}
		return nil
	}
}

// problemWhere is " (event N, seq M)" for what p names.
func problemWhere(p *hotlinev1.VerifyProblem) string {
	var parts []string
	if p.GetEventId() != 0 {
		parts = append(parts, fmt.Sprintf("event %d", p.GetEventId()))
	}
	if p.GetSeq() != 0 {
		parts = append(parts, fmt.Sprintf("seq %d", p.GetSeq()))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func idOrDash(n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
