package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/mail"
)

// startOutbox starts this replica's outbox sender when SMTP is configured
// and returns what stops it (waiting for the round in flight to record its
// attempts). Without an SMTP address messages stay queued, which is
// logged.
func startOutbox(svc *server.Service, cfg mail.Config, log *slog.Logger) (stop func(), err error) {
	if cfg.Addr == "" {
		log.Warn("no SMTP server configured (--smtp-addr): owner codes and e-mailed codes stay queued")
		return func() {}, nil
	}
	mailer, err := mail.New(cfg)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	ob := &server.Outbox{Service: svc, Mailer: mailer, Name: fmt.Sprintf("%s-%d", host, os.Getpid())}
	svc.Outbox = ob
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ob.Run(ctx, 2*time.Second)
	}()
	log.Info("mail sender started", "smtp", cfg.Addr, "security", cfg.Security, "from", cfg.From, "sender", ob.Name)
	return func() { cancel(); <-done }, nil
}
