package httpapi

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardServedFromBinary: GET /dashboard serves the page with its
// security headers, every asset the page names is served from the
// embedded files, and nothing in them points at another host or relies on
// inline code the CSP would block.
func TestDashboardServedFromBinary(t *testing.T) {
	srv := httptest.NewServer(dashboard())
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	for _, path := range []string{"/dashboard", "/dashboard/"} {
		res, body := get(path)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d, want 200", path, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q, want text/html", path, ct)
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: CSP %q allows inline code", path, csp)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", path, got)
		}
		if !strings.Contains(body, `id="login-form"`) {
			t.Errorf("GET %s: not the dashboard page", path)
		}
	}

	_, page := get("/dashboard/")
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(page, -1)
	wantType := map[string]string{".js": "text/javascript", ".css": "text/css"}
	assets := 0
	for _, m := range refs {
		ref := m[1]
		switch {
		case ref == "data:," || strings.HasPrefix(ref, "#"):
			continue // the empty favicon (no request at all), in-page links
		case !strings.HasPrefix(ref, "/dashboard/"):
			t.Errorf("index.html references %q: every asset must be under /dashboard/ on this server", ref)
			continue
		}
		assets++
		res, _ := get(ref)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", ref, res.StatusCode)
		}
		for ext, ct := range wantType {
			if strings.HasSuffix(ref, ext) && !strings.HasPrefix(res.Header.Get("Content-Type"), ct) {
				t.Errorf("GET %s: Content-Type %q, want %s", ref, res.Header.Get("Content-Type"), ct)
			}
		}
	}
	if assets < 2 {
		t.Fatalf("index.html references %d assets, want the script and the stylesheet", assets)
	}

	// No file may name another host (http://, https://, ws://, or a
	// protocol-relative //host), load a font or import from elsewhere.
	external := regexp.MustCompile(`(?i)\b(?:https?|wss?):\/\/|["'(]\/\/[a-z0-9]|@import|url\(\s*["']?(?:https?:)?\/\/`)
	inline := regexp.MustCompile(`(?i)\sstyle=|<style[\s>]|\son[a-z]+=|javascript:`)
	err := fs.WalkDir(webFiles, "web", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFiles.ReadFile(path)
		if err != nil {
			return err
		}
		if loc := external.FindIndex(b); loc != nil {
			t.Errorf("%s refers to another host: %q", path, b[loc[0]:min(len(b), loc[1]+30)])
		}
		if strings.HasSuffix(path, ".html") {
			for _, s := range regexp.MustCompile(`(?i)<script[^>]*>[^<]*`).FindAllString(string(b), -1) {
				if !strings.Contains(s, ` src="/dashboard/`) || !strings.HasSuffix(s, ">") {
					t.Errorf("%s: %s: scripts must be files under /dashboard/ (the CSP blocks inline code)", path, s)
				}
			}
			if loc := inline.FindIndex(b); loc != nil {
				t.Errorf("%s holds inline code or style the CSP would block: %q", path, b[loc[0]:min(len(b), loc[1]+30)])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDashboardUnknownAsset: a missing file is a 404, not the page.
func TestDashboardUnknownAsset(t *testing.T) {
	srv := httptest.NewServer(dashboard())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/dashboard/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /dashboard/nope.js: %d, want 404", res.StatusCode)
	}
}
