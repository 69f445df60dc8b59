// Package media keeps copies of generated files: provider URLs expire
// (an hour for some), so an operator may have every output copied into
// ledgerd's own storage and served from it.
package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
)

// Store saves outputs under Dir and serves them under BaseURL + "/media/".
type Store struct {
	Dir      string
	BaseURL  string
	Client   *http.Client
	MaxBytes int64 // per file; default 512 MiB
}

var extensions = map[string]string{"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
	"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"}

var validName = regexp.MustCompile(`^[0-9a-f]{32}\.(png|jpg|webp|gif|mp4|webm|mov)$`)

// Copy saves every URL of out and returns out pointing at the copies. A
// URL already served by this store is kept as is.
func (s *Store) Copy(ctx context.Context, out account.TaskOutput) (account.TaskOutput, error) {
	cache := map[string]string{}
	get := func(u string) (string, error) {
		if u == "" || strings.HasPrefix(u, s.BaseURL+"/") {
			return u, nil
		}
		if c, ok := cache[u]; ok {
			return c, nil
		}
		c, err := s.save(ctx, u)
		cache[u] = c
		return c, err
	}
	var err error
	if out.ImageURL, err = get(out.ImageURL); err != nil {
		return out, err
	}
	if out.VideoURL, err = get(out.VideoURL); err != nil {
		return out, err
	}
	for i, u := range out.URLs {
		if out.URLs[i], err = get(u); err != nil {
			return out, err
		}
	}
	return out, nil
}

func (s *Store) save(ctx context.Context, url string) (string, error) {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("media: %w", err)
	}
	res, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("media: fetching output: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("media: fetching output: HTTP %d", res.StatusCode)
	}
	ct, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	ext, ok := extensions[ct]
	if !ok {
		return "", fmt.Errorf("media: unexpected content type %q", ct)
	}
	sum := sha256.Sum256([]byte(url))
	name := hex.EncodeToString(sum[:16]) + ext
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(s.Dir, ".dl-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	max := s.MaxBytes
	if max == 0 {
		max = 512 << 20
	}
	n, err := io.Copy(tmp, io.LimitReader(res.Body, max+1))
	if err == nil && n > max {
		err = errors.New("output larger than the copy limit")
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("media: saving output: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.Dir, name)); err != nil {
		return "", err
	}
	return s.BaseURL + "/media/" + name, nil
}

// Handler serves stored copies under /media/{name}.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/media/")
		if !validName.MatchString(name) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeFile(w, r, filepath.Join(s.Dir, name))
	})
}
