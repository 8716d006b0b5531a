package keyring

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dvrhotline/hotline/agent/voicecode"
)

// liveKeyring makes a keyring folder and a Live over it.
func liveKeyring(t *testing.T) (*Live, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kr")
	k, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	return NewLive(k), dir
}

// rewrite opens the folder's keyring, lets edit change it and saves it, as
// a hand edit or a broken tool would.
func rewrite(t *testing.T, dir string, edit func(*Keyring)) {
	t.Helper()
	k, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(k)
	if err := k.save(); err != nil {
		t.Fatal(err)
	}
}

// refused checks that a reload failed with an error containing want and
// left the keyring in use as it was.
func refused(t *testing.T, l *Live, want string) {
	t.Helper()
	before := l.Keyring()
	ch, err := l.Reload()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reload = %+v, %v; want a refusal containing %q", ch, err, want)
	}
	if l.Keyring() != before {
		t.Fatal("a refused reload replaced the keyring in use")
	}
}

func TestReloadPicksUpRotatedKeys(t *testing.T) {
	l, dir := liveKeyring(t)
	if ch, err := l.Reload(); err != nil || !ch.Empty() {
		t.Fatalf("reload of an unchanged keyring = %+v, %v; want no change", ch, err)
	}
	k, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"master", PurposeGrant, PurposeStaff} {
		if _, err := k.Rotate(p); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := l.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Generations, []int{2}) || !slices.Equal(ch.Added, []string{"grant-2", "staff-2"}) || len(ch.Retired) != 0 {
		t.Fatalf("change = %+v, want generation 2, grant-2 and staff-2 added", ch)
	}
	if g := l.CurrentGeneration(); g != 2 {
		t.Fatalf("current generation %d after the reload, want 2", g)
	}
	if kid, _ := l.GrantSigner(); kid != "grant-2" {
		t.Fatalf("grants signed by %s after the reload, want grant-2", kid)
	}
	if _, ok := l.GrantKey("grant-1"); !ok {
		t.Fatal("grant-1 no longer signs retried issuances after the reload")
	}

	if err := k.RetireSigning("grant-1"); err != nil {
		t.Fatal(err)
	}
	if ch, err := l.Reload(); err != nil || !slices.Equal(ch.Retired, []string{"grant-1"}) {
		t.Fatalf("reload after a retirement = %+v, %v; want grant-1 retired", ch, err)
	}
	if _, ok := l.GrantKey("grant-1"); ok {
		t.Fatal("a retired grant key still signs after the reload")
	}
}

func TestReloadRefusesAKeyringThatDropsAGeneration(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.Rotate("master") })
	if _, err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	rewrite(t, dir, func(k *Keyring) { k.masters = k.masters[1:] })
	refused(t, l, "no longer holds master generation 1")
	if _, err := l.DeviceKey("JZ6OES#2017-08-01#3#DVR1101134C08011", 1); err != nil {
		t.Fatalf("generation 1 is gone from the server: %v", err)
	}
}

func TestReloadRefusesAKeyringThatDropsAGrantKey(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) {
		k.Rotate(PurposeGrant)
		k.signing = slices.DeleteFunc(k.signing, func(s SigningKey) bool { return s.KID == "grant-1" })
	})
	refused(t, l, "no longer holds signing key grant-1")
	if kid, _ := l.GrantSigner(); kid != "grant-1" {
		t.Fatalf("grants signed by %s after a refused reload, want grant-1", kid)
	}
}

func TestReloadRefusesADifferentKeyUnderAHeldGeneration(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.masters[0].Key = bytes.Repeat([]byte{7}, 32) })
	refused(t, l, "different key for master generation 1")
}

func TestReloadRefusesADifferentSeedUnderAHeldKid(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.signing[0].Seed = bytes.Repeat([]byte{7}, 32) })
	refused(t, l, "under kid grant-1")
}

func TestReloadRefusesToMakeARetiredKeyActiveAgain(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) {
		k.Rotate(PurposeGrant)
		k.RetireSigning("grant-1")
	})
	if _, err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	rewrite(t, dir, func(k *Keyring) { k.signing[0].Retired = nil })
	refused(t, l, "active again")
}

func TestReloadRefusesAKeyringOthersCanRead(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.Rotate("master") })
	if err := os.Chmod(filepath.Join(dir, FileName), 0o644); err != nil {
		t.Fatal(err)
	}
	refused(t, l, "0600")
	if g := l.CurrentGeneration(); g != 1 {
		t.Fatalf("the server took generation %d from a keyring others can read", g)
	}
}

func TestReloadRefusesAGenerationHeldTwice(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.masters = append(k.masters, k.masters[0]) })
	refused(t, l, "master generation 1 twice")
}

func TestReloadRefusesAKidHeldTwice(t *testing.T) {
	l, dir := liveKeyring(t)
	rewrite(t, dir, func(k *Keyring) { k.signing = append(k.signing, k.signing[0]) })
	refused(t, l, `kid "grant-1" twice`)
}

func TestReloadRefusesATruncatedFile(t *testing.T) {
	l, dir := liveKeyring(t)
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	refused(t, l, "is not a keyring file")
}

// TestReadersNeverSeeHalfAReload: while the keyring is rotated and reloaded
// over and over, every reader's current generation derives a device key
// and every current grant kid signs (run with -race).
func TestReadersNeverSeeHalfAReload(t *testing.T) {
	l, dir := liveKeyring(t)
	k, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				kr := l.Keyring()
				if _, err := kr.DeviceKey("JZ6OES#2017-08-01#3#DVR1101134C08011", kr.CurrentGeneration()); err != nil {
					t.Error(err)
					return
				}
				kid, _ := l.GrantSigner()
				if _, ok := l.GrantKey(kid); !ok {
					t.Errorf("grant signer %s is not a held grant key", kid)
					return
				}
			}
		})
	}
	for range 20 {
		if k.CurrentGeneration() < voicecode.MaxGeneration {
			if _, err := k.Rotate("master"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := k.Rotate(PurposeGrant); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if g := l.CurrentGeneration(); g != voicecode.MaxGeneration {
		t.Fatalf("current generation %d after 20 rotations, want %d", g, voicecode.MaxGeneration)
	}
	if kid, _ := l.GrantSigner(); kid != "grant-21" {
		t.Fatalf("grant signer %s after 20 rotations, want grant-21", kid)
	}
}
