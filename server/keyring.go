package server

import (
	"crypto/ed25519"

	"github.com/dvrhotline/hotline/agent/voicecode"
)

// Keyring is the key material the service issues with. Keys never enter the
// database: server/keyring keeps them in a folder readable by the service's
// user alone.
type Keyring interface {
	// CurrentGeneration is the master-key generation new devices are
	// provisioned under.
	CurrentGeneration() int
	// DeviceKey derives K_dev for the canonical serial under the master key
	// of that generation (the device's own, from its record).
	DeviceKey(serial string, generation int) (voicecode.DeviceKey, error)
	// GrantSigner returns the newest grant-signing key and its kid.
	GrantSigner() (kid string, key ed25519.PrivateKey)
	// GrantKey returns the grant-signing key kid if it is still held and
	// not retired, so that a retried issuance is signed as it first was.
	GrantKey(kid string) (ed25519.PrivateKey, bool)
	// GrantJWKS returns the JWK set of every grant-verification key still
	// trusted: what KeyService publishes and what DVR firmware ships.
	GrantJWKS() ([]byte, error)
	// OwnerCode derives the one-time code of owner code codeID for the
	// canonical serial (OwnerCodeDigits digits) under a key derived from
	// the master key of that generation: the code is never stored.
	OwnerCode(generation int, codeID, serial string) (string, error)
	// IssuanceMAC returns the 32-byte proof that the service made an
	// issuance: HMAC-SHA256 over msg (IssuanceMACMessage) under a key
	// derived from the master key of that generation, the issuance's own.
	// The database never holds the key, so a row written there by hand
	// carries no valid proof.
	IssuanceMAC(generation int, msg []byte) ([]byte, error)
}
