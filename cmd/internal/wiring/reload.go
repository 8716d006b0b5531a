package wiring

import (
	"context"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
)

// staffVerifier checks staff tokens against the keyring's staff keys; a
// keyring reload replaces it whole.
type staffVerifier struct {
	cur atomic.Pointer[server.StaffVerifier]
}

func (v *staffVerifier) load(k *keyring.Keyring) error {
	sv, err := server.NewStaffVerifier(k.PublicKeys(keyring.PurposeStaff, time.Now(), server.StaffTokenMaxTTL))
	if err != nil {
		return err
	}
	v.cur.Store(sv)
	return nil
}

// Verify implements grpcserver.Verifier.
func (v *staffVerifier) Verify(token string) (server.Actor, error) { return v.cur.Load().Verify(token) }

// The outcomes counted by hotline_keyring_reloads_total.
const (
	reloadLoaded    = "loaded"    // a keyring with new keys is in use
	reloadUnchanged = "unchanged" // the file held nothing new
	reloadFailed    = "failed"    // refused: the keyring in use stays
)

func (s *Server) registerKeyringMetrics() {
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hotline_keyring_reloads_total",
		Help: "Keyring reloads (SIGHUP or a changed keyring file) by outcome: loaded, unchanged, failed (the keyring in use stays).",
	}, []string{"outcome"})
	for _, o := range []string{reloadLoaded, reloadUnchanged, reloadFailed} {
		s.reloads.WithLabelValues(o)
	}
	s.master = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hotline_keyring_master_generation",
		Help: "The master-key generation new devices are provisioned under.",
	})
	s.master.Set(float64(s.Keyring.CurrentGeneration()))
	s.Registry.MustRegister(s.reloads, s.master)
}

// fileStamp identifies one version of the keyring file: keyring writes
// replace the file by a rename, so a new version is a new file.
type fileStamp struct{ fi os.FileInfo }

func stampOf(path string) fileStamp {
	fi, _ := os.Stat(path)
	return fileStamp{fi}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil
	}
	return os.SameFile(a.fi, b.fi) && a.fi.ModTime().Equal(b.fi.ModTime()) && a.fi.Size() == b.fi.Size()
}

// WatchKeyring reloads the keyring on every SIGHUP (caught from Open on)
// and whenever the keyring file has changed at a check every
// Config.KeyringPoll, until ctx ends (ReloadKeyring says what a reload
// does). One runs per Server.
func (s *Server) WatchKeyring(ctx context.Context) {
	var tick <-chan time.Time
	if every := s.cfg.KeyringPoll; every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	path := s.Keyring.Path()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.hup:
			s.stamp = stampOf(path)
			s.ReloadKeyring("SIGHUP")
		case <-tick:
			now := stampOf(path)
			if now.same(s.stamp) {
				continue
			}
			s.stamp = now
			s.ReloadKeyring("file changed")
		}
	}
}

// ReloadKeyring reloads the keyring folder now (keyring.Live.Reload): a
// keyring with new keys replaces the one in use, and the added generations
// and kids are logged; a keyring that fails to open or would drop or
// change a held key is refused, logged at error level with the file and
// the reason, and counted in hotline_keyring_reloads_total{outcome="failed"},
// and the keyring in use stays.
func (s *Server) ReloadKeyring(trigger string) (keyring.Change, error) {
	log, path := s.cfg.Logger, s.Keyring.Path()
	ch, err := s.Keyring.Reload()
	switch {
	case err != nil:
		s.reloads.WithLabelValues(reloadFailed).Inc()
		log.Error("keyring reload refused: the keyring loaded before stays in use", "file", path, "trigger", trigger,
			"err", err, "key_generation", s.Keyring.CurrentGeneration())
	case ch.Empty():
		s.reloads.WithLabelValues(reloadUnchanged).Inc()
		log.Info("keyring reloaded: nothing new", "file", path, "trigger", trigger)
	default:
		if s.staff != nil {
			if err := s.staff.load(s.Keyring.Keyring()); err != nil {
				log.Error("keyring reloaded, but its staff keys could not be trusted: staff tokens are checked against the keys loaded before",
					"file", path, "err", err)
			}
		}
		s.reloads.WithLabelValues(reloadLoaded).Inc()
		s.master.Set(float64(s.Keyring.CurrentGeneration()))
		log.Info("keyring reloaded", "file", path, "trigger", trigger, "added_generations", ch.Generations,
			"added_kids", ch.Added, "retired_kids", ch.Retired, "key_generation", s.Keyring.CurrentGeneration())
	}
	return ch, err
}
