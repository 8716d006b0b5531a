package keyring

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A factory's flashing station derives device keys and needs nothing else:
// ExportMasters writes a folder holding the master keys alone, which
// OpenMasters loads. Whoever takes that folder can derive device keys (as
// with the full keyring) but signs no grant, no staff token and no audit
// checkpoint.

// mastersFileType is the "type" of a master-keys-only keyring file.
const mastersFileType = "hotline-master-keys"

// ExportMasters writes the master keys, and no signing key, to a new
// keyring folder dst (mode 0700, its file 0600) for a factory. dst must
// not hold a keyring already.
func (k *Keyring) ExportMasters(dst string) error {
	if _, err := os.Stat(filepath.Join(dst, FileName)); err == nil {
		return fmt.Errorf("keyring: %s already exists: refusing to overwrite keys", filepath.Join(dst, FileName))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keyring: %v", err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	if err := os.Chmod(dst, 0o700); err != nil {
		return fmt.Errorf("keyring: %v", err)
	}
	f := file{Type: mastersFileType, Version: 1}
	for _, m := range k.masters {
		f.Masters = append(f.Masters, fileMaster{m.Generation, m.Created, m.Key})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(dst, FileName, append(b, '\n'))
}

// OpenMasters loads the keyring in dir for deriving device keys: a full
// keyring, or a master-keys-only folder from ExportMasters. Only
// CurrentGeneration, Generations and DeviceKey may be used on what it
// returns.
func OpenMasters(dir string) (*Keyring, error) { return open(dir, true) }

// MastersOnly reports whether k holds no signing key (OpenMasters of an
// ExportMasters folder).
func (k *Keyring) MastersOnly() bool { return len(k.signing) == 0 }

// RevokeStaff destroys the staff-token signing key kid at once, retired or
// not: verifiers loading the keyring from then on no longer trust tokens it
// signed, instead of trusting them for the tokens' longest lifetime after a
// retirement. The newest staff key cannot be revoked (rotate first). Grant
// and audit keys are not revoked this way: DVRs and old checkpoints still
// need their public keys.
func (k *Keyring) RevokeStaff(kid string) error {
	for i, s := range k.signing {
		if s.KID != kid {
			continue
		}
		if s.Purpose != PurposeStaff {
			return fmt.Errorf("keyring: %s is a %s key: only staff keys are revoked (retire it instead)", kid, s.Purpose)
		}
		if cur, _ := k.current(PurposeStaff); cur.KID == kid {
			return fmt.Errorf("keyring: %s is the newest staff key: run `keys rotate --purpose staff` first", kid)
		}
		k.signing = append(k.signing[:i:i], k.signing[i+1:]...)
		return k.save()
	}
	return fmt.Errorf("keyring: no signing key %q", kid)
}
