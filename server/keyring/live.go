package keyring

import (
	"crypto/ed25519"
	"crypto/subtle"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
)

// Live is the keyring a running server issues with. Reload replaces it with
// the folder's current keyring in one atomic step: every call sees the
// keyring before a reload or the one after it, never part of each. It
// implements server.Keyring.
//
// A reload only ever adds keys (or retires signing keys), so a caller that
// makes several calls across a reload (GrantSigner, then GrantKey of that
// kid) still finds what the first call returned.
type Live struct {
	mu  sync.Mutex // serialises Reload
	cur atomic.Pointer[Keyring]
}

// NewLive returns a Live serving k until the first reload.
func NewLive(k *Keyring) *Live {
	l := &Live{}
	l.cur.Store(k)
	return l
}

// Keyring returns the keyring now in use; it does not change under the
// caller.
func (l *Live) Keyring() *Keyring { return l.cur.Load() }

// Path returns the keyring file Reload reads.
func (l *Live) Path() string { return filepath.Join(l.Keyring().dir, FileName) }

// Change is what a reload brought: the keys a new keyring added and the
// signing keys it retired.
type Change struct {
	Generations []int    // master generations added
	Added       []string // signing keys added, by kid
	Retired     []string // signing keys newly retired, by kid
}

// Empty says that the reload found nothing new.
func (c Change) Empty() bool {
	return len(c.Generations) == 0 && len(c.Added) == 0 && len(c.Retired) == 0
}

// Reload opens the keyring folder again with Open's checks (modes, format,
// duplicate generations and kids) and, when the new keyring keeps every key
// of the one in use (Successor), swaps it in. On any error the keyring in
// use stays. An unchanged keyring is not swapped and gives an empty Change.
func (l *Live) Reload() (Change, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cur.Load()
	next, err := Open(old.dir)
	if err != nil {
		return Change{}, err
	}
	ch, err := old.Successor(next)
	if err != nil {
		return Change{}, err
	}
	if !ch.Empty() {
		l.cur.Store(next)
	}
	return ch, nil
}

// Successor checks that next may replace k in a running server and says
// what it changes. It refuses a keyring that drops a master generation or
// a signing key k holds, holds other key material under the same
// generation or kid, or makes a retired signing key active again: devices
// provisioned under a dropped generation could no longer be issued codes,
// and a dropped grant key leaves the published set while its grants are
// still live. A generation destroyed with `keys retire --generation` (after
// its check that no device needs it) leaves a running server at its next
// restart.
func (k *Keyring) Successor(next *Keyring) (Change, error) {
	path := filepath.Join(next.dir, FileName)
	var ch Change
	masters := map[int]MasterKey{}
	for _, m := range next.masters {
		masters[m.Generation] = m
	}
	for _, m := range k.masters {
		n, ok := masters[m.Generation]
		if !ok {
			return Change{}, fmt.Errorf("keyring: %s no longer holds master generation %d, which the server holds: devices provisioned under it could no longer be issued codes (a generation destroyed with `keys retire --generation` leaves a server when it restarts)", path, m.Generation)
		}
		if subtle.ConstantTimeCompare(n.Key, m.Key) != 1 {
			return Change{}, fmt.Errorf("keyring: %s holds a different key for master generation %d: every device provisioned under it would stop verifying its codes", path, m.Generation)
		}
		delete(masters, m.Generation)
	}
	for g := range masters {
		ch.Generations = append(ch.Generations, g)
	}
	slices.Sort(ch.Generations)

	signing := map[string]SigningKey{}
	for _, s := range next.signing {
		signing[s.KID] = s
	}
	for _, s := range k.signing {
		n, ok := signing[s.KID]
		if !ok {
			return Change{}, fmt.Errorf("keyring: %s no longer holds signing key %s, which the server holds: what it signed could no longer be verified", path, s.KID)
		}
		if n.Purpose != s.Purpose || subtle.ConstantTimeCompare(n.Seed, s.Seed) != 1 {
			return Change{}, fmt.Errorf("keyring: %s holds a different %s key under kid %s: what the held one signed would no longer verify", path, n.Purpose, s.KID)
		}
		if s.Retired != nil && n.Retired == nil {
			return Change{}, fmt.Errorf("keyring: %s makes signing key %s active again, retired since %s: retirement is final", path, s.KID, s.Retired.Format(time.RFC3339))
		}
		if s.Retired == nil && n.Retired != nil {
			ch.Retired = append(ch.Retired, s.KID)
		}
		delete(signing, s.KID)
	}
	for _, s := range next.signing {
		if _, added := signing[s.KID]; added {
			ch.Added = append(ch.Added, s.KID)
		}
	}
	return ch, nil
}

// CurrentGeneration implements server.Keyring.
func (l *Live) CurrentGeneration() int { return l.Keyring().CurrentGeneration() }

// Generations lists the master-key generations held.
func (l *Live) Generations() []int { return l.Keyring().Generations() }

// DeviceKey implements server.Keyring.
func (l *Live) DeviceKey(serial string, generation int) (voicecode.DeviceKey, error) {
	return l.Keyring().DeviceKey(serial, generation)
}

// OwnerCode implements server.Keyring.
func (l *Live) OwnerCode(generation int, codeID, serial string) (string, error) {
	return l.Keyring().OwnerCode(generation, codeID, serial)
}

// IssuanceMAC implements server.Keyring.
func (l *Live) IssuanceMAC(generation int, msg []byte) ([]byte, error) {
	return l.Keyring().IssuanceMAC(generation, msg)
}

// GrantSigner implements server.Keyring.
func (l *Live) GrantSigner() (string, ed25519.PrivateKey) { return l.Keyring().GrantSigner() }

// GrantKey implements server.Keyring.
func (l *Live) GrantKey(kid string) (ed25519.PrivateKey, bool) { return l.Keyring().GrantKey(kid) }

// GrantJWKS implements server.Keyring.
func (l *Live) GrantJWKS() ([]byte, error) { return l.Keyring().GrantJWKS() }

// StaffSigner returns the development staff-token issuer's key.
func (l *Live) StaffSigner() (string, ed25519.PrivateKey) { return l.Keyring().StaffSigner() }

// AuditSigner returns the newest audit checkpoint key.
func (l *Live) AuditSigner() (string, ed25519.PrivateKey) { return l.Keyring().AuditSigner() }

// PublicKeys is Keyring.PublicKeys of the keyring now in use.
func (l *Live) PublicKeys(purpose string, now time.Time, grace time.Duration) map[string]ed25519.PublicKey {
	return l.Keyring().PublicKeys(purpose, now, grace)
}
