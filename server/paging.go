package server

import (
	"encoding/base64"
	"encoding/json"
)

// Page sizes of the list reads (AIP-158): one default and one maximum per
// list, defined here only. A page size of 0 means the default, one over
// the maximum is clamped to it (never refused), a negative one is
// EInvalid. The proto comments of the request messages state the same
// numbers; server/grpc's TestPageSizesMatchProto keeps them in step.
const (
	// DefaultIssuancesPage and MaxIssuancesPage bound Issuances.
	DefaultIssuancesPage = 20
	MaxIssuancesPage     = 200
	// DefaultAuditPage and MaxAuditPage bound QueryAudit. A thousand
	// events are about 300 kB, far below gRPC's 4 MB message limit, and
	// one index range read (see server/postgres's QueryAudit).
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
)

// pageSize applies a list's default and maximum to the size asked for.
func pageSizeOf(n, def, max int) (int, *Error) {
	switch {
	case n < 0:
		return 0, Invalid("page_size", "page_size %d: expected 0 (the default, %d) or more; at most %d are returned", n, def, max)
	case n == 0:
		return def, nil
	case n > max:
		return max, nil
	}
	return n, nil
}

// IssuancesPage is one page of a device's issuances, newest first.
type IssuancesPage struct {
	Issuances []Issuance
	// NextPageToken continues the list after the last issuance; empty on
	// the last page.
	NextPageToken string
}

// issuancesToken is the keyset cursor of Issuances, opaque to clients:
// the device and the last sequence returned. The per-device sequence is
// unique, so it alone orders the list. V is the token's format version
// (1): a token of another version is refused, not misread.
type issuancesToken struct {
	V      int    `json:"v"`
	Serial string `json:"s"`
	Seq    int64  `json:"q"`
}

const issuancesTokenVersion = 1

func (t issuancesToken) encode() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeIssuancesToken reads a token of the listing of serial (canonical).
func decodeIssuancesToken(s, serial string) (issuancesToken, *Error) {
	var t issuancesToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.V != issuancesTokenVersion || t.Seq <= 0 || t.Serial == "" {
		return t, Invalid("page_token", "page_token: expected a next_page_token from a previous ListIssuances response, unchanged")
	}
	if t.Serial != serial {
		return t, Invalid("page_token", "page_token belongs to another device's list: repeat the same serial, or start again without a token")
	}
	return t, nil
}
