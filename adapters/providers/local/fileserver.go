package local

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// FileServer serves the rendered files, for GET /files/{name}. Mount it
// under the prefix the output URLs use, with the prefix stripped:
//
//	mux.Handle("/files/", http.StripPrefix("/files", p.FileServer()))
//
// It serves only names the provider could have produced (32 lowercase hex
// characters and .png or .gif), so there is no directory listing and no
// path to traverse; anything else is 404. Files are content-addressed and
// never change, hence the long, immutable caching.
func (p *Provider) FileServer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		ctype, ok := fileType(name)
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		f, err := os.Open(filepath.Join(p.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back: let the next request render it again.
			p.forget(name)
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		h.Set("ETag", `"`+name[:2*keyLen]+`"`)
		h.Set("X-Content-Type-Options", "nosniff")
		// ServeContent adds ranges, HEAD and conditional requests.
		http.ServeContent(w, r, name, st.ModTime(), f)
	})
}

// fileType returns the Content-Type of a name the provider could have
// produced, and false for any other name.
func fileType(name string) (string, bool) {
	if len(name) != 2*keyLen+4 {
		return "", false
	}
	for _, c := range name[:2*keyLen] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	switch name[2*keyLen:] {
	case ".png":
		return "image/png", true
	case ".gif":
		return "image/gif", true
	}
	return "", false
}
