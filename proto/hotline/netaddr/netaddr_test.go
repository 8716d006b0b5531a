package netaddr_test

import (
	"testing"

	"github.com/dvrhotline/hotline/proto/hotline/netaddr"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7443": true, "localhost:7443": true, "[::1]:7443": true, "127.8.9.10:1": true,
		"10.0.0.1:7443": false, "hotline.example.com:443": false, "[2001:db8::1]:7443": false,
	} {
		if got := netaddr.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
