package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A request its client abandoned is not a server fault: no ERROR line, and
// a status that tells it apart. The same error with the client still
// there is one.
func TestAbandonedRequestIsNotAnInternalError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cancelled bool
		status    int
		logged    string
	}{
		{"client gone", true, statusClientClosed, "level=INFO msg=\"client closed the request\""},
		{"client still there", false, http.StatusInternalServerError, "level=ERROR msg=\"internal error\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil))}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			r := httptest.NewRequest("POST", "/api/v1/image/generate", nil).WithContext(ctx)
			w := httptest.NewRecorder()
			s.writeError(w, r, fmt.Errorf("running the call: %w", context.Canceled))
			if w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("log %q, want %s", logs.String(), tc.logged)
			}
		})
	}
}
