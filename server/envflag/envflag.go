// Package envflag reads the environment variables that give the server's
// flags their defaults, the same way for every command and package that
// registers flags: a variable set to a malformed value is ignored and the
// built-in default applies (the flag's help names the variable).
package envflag

import (
	"os"
	"strconv"
	"time"
)

// String returns the variable k, or def when it is empty or unset.
func String(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Int returns the variable k as an integer, or def when it is unset or not
// one.
func Int(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

// Duration returns the variable k as a time.Duration ("30s"), or def when
// it is unset or not one.
func Duration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}
