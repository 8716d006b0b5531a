// Package keyring keeps the service's key material in a folder: the master
// keys device keys are derived from (one per generation), the grant-signing
// keys, the development staff-token issuer's key and the audit checkpoint
// key, each with a generation or kid. Keys never enter the database.
//
// The folder holds one file, keyring.json, written atomically (new copy,
// fsync, rename, fsync the folder). The folder must be 0700 and the file
// 0600: Open refuses a keyring that others can read. A running server holds
// a Live keyring, which Reload replaces with the folder's newer one when it
// keeps every key the server holds.
package keyring

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/dvrhotline/hotline/agent/grant"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// FileName is the keyring file inside the keyring folder.
const FileName = "keyring.json"

// fileType is the keyring file's "type", so that a key file of another kind
// is never mistaken for it.
const fileType = "hotline-keyring"

// The purposes of signing keys.
const (
	PurposeGrant = "grant"
	PurposeStaff = "staff"
	PurposeAudit = "audit"
)

// Secret is key bytes that never print: its String and JSON-less formatting
// are redacted (the file is written through the unexported file struct).
type Secret []byte

// String redacts the secret.
func (Secret) String() string { return "REDACTED" }

// GoString redacts the secret.
func (Secret) GoString() string { return "REDACTED" }

// Format redacts the secret for every verb.
func (Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, "REDACTED") }

// MasterKey is one generation of the device-key master secret.
type MasterKey struct {
	Generation int
	Created    time.Time
	Key        Secret
	// macKey caches the issuance MAC key derived from Key.
	macKey Secret
}

// issuanceMACKey returns m's issuance MAC key, deriving and caching it
// when m has none yet (Open and addMaster call it before the keyring is
// shared, so it is only read afterwards).
func (m *MasterKey) issuanceMACKey() (Secret, error) {
	if m.macKey == nil {
		key, err := hkdf.Key(sha256.New, m.Key, nil, issuanceMACInfo, sha256.Size)
		if err != nil {
			return nil, fmt.Errorf("keyring: issuance MAC key: %v", err)
		}
		m.macKey = key
	}
	return m.macKey, nil
}

// SigningKey is an Ed25519 key with its kid and lifecycle.
type SigningKey struct {
	KID     string
	Purpose string
	Created time.Time
	// Retired is set when the key stops signing; a retired grant key is
	// still published until every grant it signed has expired.
	Retired *time.Time
	Seed    Secret
	// priv caches the expanded key: expanding a seed costs a scalar
	// multiplication, too much to repeat on every issuance.
	priv Secret
}

func newSigningKey(kid, purpose string, created time.Time, retired *time.Time, seed []byte) SigningKey {
	return SigningKey{KID: kid, Purpose: purpose, Created: created, Retired: retired, Seed: seed,
		priv: Secret(ed25519.NewKeyFromSeed(seed))}
}

// Format keeps the key material out of every %v and %+v (fmt prints the
// unexported cache field without calling its Format).
func (k SigningKey) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "keyring.SigningKey{kid: %s, purpose: %s, key: REDACTED}", k.KID, k.Purpose)
}

// MarshalJSON refuses: key material leaves the keyring only through save.
func (SigningKey) MarshalJSON() ([]byte, error) {
	return nil, errors.New("keyring: a signing key is not marshalled")
}

// Format keeps the key out of every %v and %+v.
func (m MasterKey) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "keyring.MasterKey{generation: %d, key: REDACTED}", m.Generation)
}

// MarshalJSON refuses: key material leaves the keyring only through save.
func (MasterKey) MarshalJSON() ([]byte, error) {
	return nil, errors.New("keyring: a master key is not marshalled")
}

// Private returns the Ed25519 private key.
func (k SigningKey) Private() ed25519.PrivateKey {
	if k.priv != nil {
		return ed25519.PrivateKey(k.priv)
	}
	return ed25519.NewKeyFromSeed(k.Seed)
}

// Public returns the Ed25519 public key.
func (k SigningKey) Public() ed25519.PublicKey {
	return k.Private().Public().(ed25519.PublicKey)
}

// Keyring is the loaded key material. It implements server.Keyring.
type Keyring struct {
	dir     string
	masters []MasterKey // ascending generation
	signing []SigningKey
	now     func() time.Time
}

type fileMaster struct {
	Generation int       `json:"generation"`
	Created    time.Time `json:"created"`
	Key        []byte    `json:"key"`
}

type fileSigning struct {
	KID     string     `json:"kid"`
	Purpose string     `json:"purpose"`
	Created time.Time  `json:"created"`
	Retired *time.Time `json:"retired,omitempty"`
	Seed    []byte     `json:"ed25519_seed"`
}

type file struct {
	Type    string        `json:"type"`
	Version int           `json:"version"`
	Masters []fileMaster  `json:"master_keys"`
	Signing []fileSigning `json:"signing_keys"`
}

// ErrNotFound is returned by Open when the folder has no keyring.
var ErrNotFound = errors.New("keyring: no keyring in that folder (create one with `hotline-server keys init`)")

// Init creates a new keyring in dir with generation 1 of the master key and
// one key of each signing purpose. It refuses to overwrite an existing one.
func Init(dir string) (*Keyring, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyring: %v", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keyring: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
		return nil, fmt.Errorf("keyring: %s already exists: refusing to overwrite keys (use `keys rotate` to add a generation)", filepath.Join(dir, FileName))
	}
	k := &Keyring{dir: dir, now: time.Now}
	if _, err := k.addMaster(); err != nil {
		return nil, err
	}
	for _, p := range []string{PurposeGrant, PurposeStaff, PurposeAudit} {
		if _, err := k.addSigning(p); err != nil {
			return nil, err
		}
	}
	if err := k.save(); err != nil {
		return nil, err
	}
	return k, nil
}

// Open loads the keyring in dir, refusing one that others can read, and a
// factory's master-keys-only folder (ExportMasters): a server needs its
// signing keys.
func Open(dir string) (*Keyring, error) { return open(dir, false) }

func open(dir string, mastersOnlyOK bool) (*Keyring, error) {
	path := filepath.Join(dir, FileName)
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("keyring: %v", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keyring: folder %s has mode %04o: expected 0700 (others must not reach the keys); run chmod 700 %s", dir, st.Mode().Perm(), dir)
	}
	fst, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("keyring: %v", err)
	}
	if fst.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keyring: %s has mode %04o: expected 0600 (others must not read the keys); run chmod 600 %s", path, fst.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring: %v", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("keyring: %s is not a keyring file: %v", path, err)
	}
	mastersOnly := f.Type == mastersFileType && mastersOnlyOK && len(f.Signing) == 0
	if (f.Type != fileType && !mastersOnly) || f.Version != 1 {
		return nil, fmt.Errorf("keyring: %s: type %q version %d: expected %q version 1", path, f.Type, f.Version, fileType)
	}
	k := &Keyring{dir: dir, now: time.Now}
	gens, kids := map[int]bool{}, map[string]bool{}
	for _, m := range f.Masters {
		if len(m.Key) < voicecode.KeySize || m.Generation < 1 || m.Generation > voicecode.MaxGeneration {
			return nil, fmt.Errorf("keyring: master key generation %d is malformed", m.Generation)
		}
		if gens[m.Generation] {
			return nil, fmt.Errorf("keyring: %s holds master generation %d twice", path, m.Generation)
		}
		gens[m.Generation] = true
		mk := MasterKey{Generation: m.Generation, Created: m.Created, Key: Secret(m.Key)}
		if _, err := mk.issuanceMACKey(); err != nil {
			return nil, err
		}
		k.masters = append(k.masters, mk)
	}
	sort.Slice(k.masters, func(i, j int) bool { return k.masters[i].Generation < k.masters[j].Generation })
	for _, s := range f.Signing {
		if len(s.Seed) != ed25519.SeedSize || s.KID == "" {
			return nil, fmt.Errorf("keyring: signing key %q is malformed", s.KID)
		}
		switch s.Purpose {
		case PurposeGrant, PurposeStaff, PurposeAudit:
		default:
			return nil, fmt.Errorf("keyring: signing key %q has purpose %q: expected grant, staff or audit", s.KID, s.Purpose)
		}
		if kids[s.KID] {
			return nil, fmt.Errorf("keyring: %s holds kid %q twice", path, s.KID)
		}
		kids[s.KID] = true
		k.signing = append(k.signing, newSigningKey(s.KID, s.Purpose, s.Created, s.Retired, s.Seed))
	}
	if len(k.masters) == 0 {
		return nil, fmt.Errorf("keyring: %s has no master key", path)
	}
	for _, p := range []string{PurposeGrant, PurposeStaff, PurposeAudit} {
		if _, ok := k.current(p); !ok && !mastersOnly {
			return nil, fmt.Errorf("keyring: %s has no active %s key", path, p)
		}
	}
	return k, nil
}

// OpenOrInit opens the keyring in dir, creating one if there is none.
func OpenOrInit(dir string) (k *Keyring, created bool, err error) {
	k, err = Open(dir)
	if errors.Is(err, ErrNotFound) {
		k, err = Init(dir)
		return k, err == nil, err
	}
	return k, false, err
}

// Dir returns the keyring's folder.
func (k *Keyring) Dir() string { return k.dir }

func (k *Keyring) addMaster() (MasterKey, error) {
	gen := 1
	if n := len(k.masters); n > 0 {
		gen = k.masters[n-1].Generation + 1
	}
	if gen > voicecode.MaxGeneration {
		return MasterKey{}, fmt.Errorf("keyring: generation %d would exceed the voice code's %d generations", gen, voicecode.MaxGeneration)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return MasterKey{}, err
	}
	m := MasterKey{Generation: gen, Created: k.now().UTC(), Key: b}
	if _, err := m.issuanceMACKey(); err != nil {
		return MasterKey{}, err
	}
	k.masters = append(k.masters, m)
	return m, nil
}

func (k *Keyring) addSigning(purpose string) (SigningKey, error) {
	// One more than the highest number of purpose so far: a kid is never
	// reused, not even one revoked (RevokeStaff).
	n := 1
	for _, s := range k.signing {
		var m int
		if _, err := fmt.Sscanf(s.KID, purpose+"-%d", &m); err == nil && s.Purpose == purpose && m >= n {
			n = m + 1
		}
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return SigningKey{}, err
	}
	s := newSigningKey(fmt.Sprintf("%s-%d", purpose, n), purpose, k.now().UTC(), nil, seed)
	k.signing = append(k.signing, s)
	return s, nil
}

// current returns the newest unretired key of purpose.
func (k *Keyring) current(purpose string) (SigningKey, bool) {
	for i := len(k.signing) - 1; i >= 0; i-- {
		if s := k.signing[i]; s.Purpose == purpose && s.Retired == nil {
			return s, true
		}
	}
	return SigningKey{}, false
}

// save writes the keyring atomically: temp file, fsync, rename, fsync folder.
func (k *Keyring) save() error {
	f := file{Type: fileType, Version: 1}
	for _, m := range k.masters {
		f.Masters = append(f.Masters, fileMaster{m.Generation, m.Created, m.Key})
	}
	for _, s := range k.signing {
		f.Signing = append(f.Signing, fileSigning{s.KID, s.Purpose, s.Created, s.Retired, s.Seed})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(k.dir, FileName, append(b, '\n'))
}

func writeAtomic(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %v", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %v", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %v", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	defer d.Close()
	return d.Sync()
}

// CurrentGeneration implements server.Keyring.
func (k *Keyring) CurrentGeneration() int { return k.masters[len(k.masters)-1].Generation }

// Generations lists the master-key generations held.
func (k *Keyring) Generations() []int {
	out := make([]int, len(k.masters))
	for i, m := range k.masters {
		out[i] = m.Generation
	}
	return out
}

// DeviceKey implements server.Keyring.
func (k *Keyring) DeviceKey(serial string, generation int) (voicecode.DeviceKey, error) {
	for _, m := range k.masters {
		if m.Generation == generation {
			return voicecode.DeriveDeviceKey(m.Key, generation, serial)
		}
	}
	return voicecode.DeviceKey{}, fmt.Errorf("keyring: no master key of generation %d (held: %v)", generation, k.Generations())
}

// issuanceMACInfo is the HKDF info of the issuance MAC key, apart from
// every device key's ("hotline/device-key/v1" || 0 || serial).
const issuanceMACInfo = "hotline/issuance-mac/v1"

// IssuanceMAC implements server.Keyring: HMAC-SHA256(K, msg) with
// K = HKDF-SHA256(master[generation], info "hotline/issuance-mac/v1").
// The key lives exactly as long as the master key whose device keys the
// issuances of that generation are minted under.
func (k *Keyring) IssuanceMAC(generation int, msg []byte) ([]byte, error) {
	for i := range k.masters {
		if m := &k.masters[i]; m.Generation == generation {
			key := m.macKey
			if key == nil { // a MasterKey built outside Open and Init: derive, never write
				c := *m
				var err error
				if key, err = c.issuanceMACKey(); err != nil {
					return nil, err
				}
			}
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			return h.Sum(nil), nil
		}
	}
	return nil, fmt.Errorf("keyring: no master key of generation %d (held: %v)", generation, k.Generations())
}

// GrantSigner implements server.Keyring.
func (k *Keyring) GrantSigner() (string, ed25519.PrivateKey) {
	s, _ := k.current(PurposeGrant)
	return s.KID, s.Private()
}

// GrantKey implements server.Keyring.
func (k *Keyring) GrantKey(kid string) (ed25519.PrivateKey, bool) {
	for _, s := range k.signing {
		if s.KID == kid && s.Purpose == PurposeGrant && s.Retired == nil {
			return s.Private(), true
		}
	}
	return nil, false
}

// StaffSigner returns the development staff-token issuer's key.
func (k *Keyring) StaffSigner() (string, ed25519.PrivateKey) {
	s, _ := k.current(PurposeStaff)
	return s.KID, s.Private()
}

// AuditSigner returns the newest audit checkpoint key.
func (k *Keyring) AuditSigner() (string, ed25519.PrivateKey) {
	s, _ := k.current(PurposeAudit)
	return s.KID, s.Private()
}

// PublicKeys returns the public keys of purpose that verifiers should still
// trust at time now: every unretired key, and retired keys until grace after
// their retirement (for grants: the longest a grant lives).
func (k *Keyring) PublicKeys(purpose string, now time.Time, grace time.Duration) map[string]ed25519.PublicKey {
	out := map[string]ed25519.PublicKey{}
	for _, s := range k.signing {
		if s.Purpose != purpose {
			continue
		}
		if s.Retired != nil && !now.Before(s.Retired.Add(grace)) {
			continue
		}
		out[s.KID] = s.Public()
	}
	return out
}

// GrantJWKS implements server.Keyring.
func (k *Keyring) GrantJWKS() ([]byte, error) {
	return grant.MarshalJWKS(k.PublicKeys(PurposeGrant, k.now(), grant.MaxLifetime))
}

// StaffJWKS returns the JWK set of the development staff-token keys, for a
// server configured to trust them by file.
func (k *Keyring) StaffJWKS() ([]byte, error) {
	return grant.MarshalJWKS(k.PublicKeys(PurposeStaff, k.now(), server.StaffTokenMaxTTL))
}

// Rotate adds a new key for purpose ("master", or a signing purpose) and
// saves the keyring. New issuances use the newest; older master generations
// stay to serve the devices provisioned under them, older signing keys stay
// published until retired.
func (k *Keyring) Rotate(purpose string) (string, error) {
	var name string
	switch purpose {
	case "master":
		m, err := k.addMaster()
		if err != nil {
			return "", err
		}
		name = fmt.Sprintf("master generation %d", m.Generation)
	case PurposeGrant, PurposeStaff, PurposeAudit:
		s, err := k.addSigning(purpose)
		if err != nil {
			return "", err
		}
		name = s.KID
	default:
		return "", fmt.Errorf("keyring: purpose %q: expected master, grant, staff or audit", purpose)
	}
	return name, k.save()
}

// RetireSigning stops a signing key from signing. The newest key of a
// purpose cannot be retired (rotate first). Retired grant keys stay
// published for grant.MaxLifetime; retired audit keys stay trusted for
// verification forever (the log they signed does not expire).
func (k *Keyring) RetireSigning(kid string) error {
	i, err := k.retirable(kid)
	if err != nil {
		return err
	}
	now := k.now().UTC()
	k.signing[i].Retired = &now
	return k.save()
}

// CheckRetireSigning says whether RetireSigning(kid) would be refused by the
// keyring itself (unknown, already retired, the newest of its purpose),
// before the caller asks the registry about live grants.
func (k *Keyring) CheckRetireSigning(kid string) error {
	_, err := k.retirable(kid)
	return err
}

func (k *Keyring) retirable(kid string) (int, error) {
	for i, s := range k.signing {
		if s.KID != kid {
			continue
		}
		if s.Retired != nil {
			return 0, fmt.Errorf("keyring: %s is already retired (since %s)", kid, s.Retired.Format(time.RFC3339))
		}
		if cur, _ := k.current(s.Purpose); cur.KID == kid {
			return 0, fmt.Errorf("keyring: %s is the newest %s key and still signs: run `keys rotate --purpose %s` first", kid, s.Purpose, s.Purpose)
		}
		return i, nil
	}
	return 0, fmt.Errorf("keyring: no signing key %q", kid)
}

// SigningKeys lists the signing keys (secrets redacted by type).
func (k *Keyring) SigningKeys() []SigningKey { return append([]SigningKey(nil), k.signing...) }

// RetireMaster destroys the master key of generation gen. The caller must
// first make sure no device is still provisioned under it; the newest
// generation cannot be retired.
func (k *Keyring) RetireMaster(gen int) error {
	if gen == k.CurrentGeneration() {
		return fmt.Errorf("keyring: generation %d is the newest: rotate first", gen)
	}
	for i, m := range k.masters {
		if m.Generation == gen {
			k.masters = append(k.masters[:i:i], k.masters[i+1:]...)
			return k.save()
		}
	}
	return fmt.Errorf("keyring: no master key of generation %d (held: %v)", gen, k.Generations())
}

// ownerCodeLabel is the HKDF info of the owner-code key: domain separated
// from device keys ("hotline/device-key/v1" || 0 || serial), so that it
// never equals one.
const ownerCodeLabel = "hotline/owner-code-key/v1"

// OwnerCode implements server.Keyring: K = HKDF-SHA256(master[generation],
// info = "hotline/owner-code-key/v1"), code = the first 8 bytes of
// HMAC-SHA256(K, "hotline/owner-code/v1" || 0 || codeID || 0 || serial),
// big-endian, mod 10^6, as six digits (the bias of 2^64 mod 10^6 is below
// 10^-13).
func (k *Keyring) OwnerCode(generation int, codeID, serial string) (string, error) {
	for _, m := range k.masters {
		if m.Generation == generation {
			return DeriveOwnerCode(m.Key, codeID, serial)
		}
	}
	return "", fmt.Errorf("keyring: no master key of generation %d (held: %v)", generation, k.Generations())
}

// DeriveOwnerCode is OwnerCode under master, for test vectors and other
// keyrings.
func DeriveOwnerCode(master []byte, codeID, serial string) (string, error) {
	key, err := hkdf.Key(sha256.New, master, nil, ownerCodeLabel, 32)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("hotline/owner-code/v1\x00" + codeID + "\x00" + serial))
	n := binary.BigEndian.Uint64(mac.Sum(nil)[:8]) % 1_000_000
	return fmt.Sprintf("%06d", n), nil
}
