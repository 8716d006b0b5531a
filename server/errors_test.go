package server_test

// Tests of server.Error's text, its default reasons and ErrorCode.

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dvrhotline/hotline/server"
)

func TestError(t *testing.T) {
	cause := errors.New("connection reset")
	e := server.Internal(cause, "reading")
	if e.Error() != "internal: internal error while reading: connection reset" || !errors.Is(e, cause) {
		t.Errorf("Internal = %q", e.Error())
	}
	if got := server.Errorf(server.ELimit, "%d left", 0).Error(); got != "limit: 0 left" {
		t.Errorf("Errorf = %q", got)
	}
	tests := []struct {
		err  *server.Error
		want server.Reason
	}{
		{&server.Error{Code: server.EInvalid}, server.ReasonInvalidArgument},
		{&server.Error{Code: server.ELimit}, server.ReasonLimitPerDevice},
		{&server.Error{Code: server.ELimit, Reason: server.ReasonLimitPerAgent}, server.ReasonLimitPerAgent},
		{&server.Error{Code: "made_up"}, server.ReasonInternal},
	}
	for _, tt := range tests {
		if got := tt.err.ReasonOf(); got != tt.want {
			t.Errorf("%s.ReasonOf() = %s, want %s", tt.err.Code, got, tt.want)
		}
	}
	if c := server.ErrorCode(fmt.Errorf("wrapped: %w", server.Errorf(server.ENotFound, "x"))); c != server.ENotFound {
		t.Errorf("ErrorCode of a wrapped error = %s", c)
	}
	if c := server.ErrorCode(cause); c != server.EInternal {
		t.Errorf("ErrorCode of a plain error = %s", c)
	}
}
