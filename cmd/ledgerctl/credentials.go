package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// credentials is what login stores: a session token for one ledgerd.
type credentials struct {
	URL       string    `json:"url"`
	Token     string    `json:"token"`
	Email     string    `json:"email"`
	Role      string    `json:"role,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// credentialsPath is $XDG_CONFIG_HOME/ledgerctl/credentials.json, else
// the same file under os.UserConfigDir. XDG_CONFIG_HOME is read from the
// invocation's environment, on every platform.
func (c *cli) credentialsPath() (string, error) {
	dir := c.getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		var err error
		if dir, err = os.UserConfigDir(); err != nil {
			return "", fmt.Errorf("finding where to keep credentials: %w", err)
		}
	}
	return filepath.Join(dir, "ledgerctl", "credentials.json"), nil
}

// loadCredentials returns nil, nil when nobody is logged in.
func (c *cli) loadCredentials() (*credentials, string, error) {
	path, err := c.credentialsPath()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(c.stderr, "warning: %s is readable by other users (mode %v): run 'chmod 600 %s'\n", path, fi.Mode().Perm(), path)
		}
	}
	var cr credentials
	if err := json.Unmarshal(b, &cr); err != nil {
		return nil, path, fmt.Errorf("reading %s: %w (run 'ledgerctl login' again)", path, err)
	}
	return &cr, path, nil
}

// saveCredentials writes the file atomically, mode 0600 in a 0700 directory.
func (c *cli) saveCredentials(cr credentials) (string, error) {
	path, err := c.credentialsPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(cr, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".credentials-*.json")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // no-op once renamed
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return "", err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// removeCredentials reports whether there was a file to remove.
func (c *cli) removeCredentials() (bool, string, error) {
	path, err := c.credentialsPath()
	if err != nil {
		return false, "", err
	}
	err = os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, path, nil
	}
	return err == nil, path, err
}

// baseURL is --url, else $LEDGER_URL, else the URL of the stored session,
// else the default. explicit says whether the user chose it.
func (c *cli) baseURL(cr *credentials) (base string, explicit bool, err error) {
	raw := c.url
	if raw == "" {
		raw = c.getenv("LEDGER_URL")
	}
	explicit = raw != ""
	if !explicit && cr != nil && cr.URL != "" {
		raw = cr.URL
	}
	if raw == "" {
		raw = defaultURL
	}
	base, err = normalizeURL(raw)
	if err != nil {
		return "", explicit, usagef("", "%v", err)
	}
	return base, explicit, nil
}

// errNotLoggedIn is what a command without a token says.
var errNotLoggedIn = errors.New("not logged in: run 'ledgerctl login' first (or set LEDGER_TOKEN)")

// client is an API client for a command that needs a staff session: the
// token is $LEDGER_TOKEN, else the stored one, which is only ever sent to
// the URL it was issued by.
func (c *cli) client() (*client, error) {
	cr, _, err := c.loadCredentials()
	if err != nil {
		return nil, err
	}
	base, _, err := c.baseURL(cr)
	if err != nil {
		return nil, err
	}
	if tok := c.getenv("LEDGER_TOKEN"); tok != "" {
		return newClient(base, tok), nil
	}
	if cr == nil || cr.Token == "" {
		return nil, errNotLoggedIn
	}
	if stored, _ := normalizeURL(cr.URL); stored != base {
		return nil, fmt.Errorf("you are logged in to %s, not %s: run 'ledgerctl login --url %s'", cr.URL, base, base)
	}
	if !cr.ExpiresAt.IsZero() && time.Now().After(cr.ExpiresAt) {
		return nil, fmt.Errorf("your session expired at %s: run 'ledgerctl login'", cr.ExpiresAt.Local().Format(time.DateTime))
	}
	return newClient(base, cr.Token), nil
}

// postClient is client with an Idempotency-Key for its POSTs: key if
// given, else a fresh random one.
func (c *cli) postClient(key string) (*client, error) {
	if key != "" && !validIdempotencyKey(key) {
		return nil, usagef("", "--idempotency-key must be 1-255 printable ASCII characters without spaces")
	}
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	cl.idemKey = key
	if cl.idemKey == "" {
		cl.idemKey = newIdempotencyKey()
	}
	return cl, nil
}
