// Package netaddr holds the address rules the Hotline server and its
// clients share, so that both apply the same one. It imports the standard
// library only: hotlinectl links it without linking server code.
package netaddr

import (
	"net"
	"strings"
)

// IsLoopback reports whether addr ("host:port", or a host alone) names a
// loopback host: the one rule by which the server refuses to listen, and
// hotlinectl to dial, in plaintext anywhere else.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
