package fal

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ref is what a handle records: the request id and the URLs fal returned
// for it. Encoded as compact JSON; the status and cancel URLs are left out
// when they follow fal's documented layout ({response_url}/status and
// {response_url}/cancel), which keeps a typical Ref near 120 bytes.
type ref struct {
	ID       string `json:"id"`
	Response string `json:"r"`
	Status   string `json:"s,omitempty"`
	Cancel   string `json:"c,omitempty"`
}

func (r ref) statusURL() string {
	if r.Status != "" {
		return r.Status
	}
	return r.Response + "/status"
}

func (r ref) cancelURL() string {
	if r.Cancel != "" {
		return r.Cancel
	}
	return r.Response + "/cancel"
}

func (r ref) responseURL() string { return r.Response }

func (r ref) encode() (string, error) {
	c := r
	if c.Status == c.Response+"/status" {
		c.Status = ""
	}
	if c.Cancel == c.Response+"/cancel" {
		c.Cancel = ""
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	if len(b) >= maxRef {
		return "", fmt.Errorf("request %s: its URLs are too long to record (%d bytes)", r.ID, len(b))
	}
	return string(b), nil
}

// checkRef validates a ref: an id and absolute URLs on the queue's origin.
func (p *Provider) checkRef(r ref) error {
	if r.ID == "" {
		return errors.New("no request_id")
	}
	if len(r.ID) > 200 || strings.ContainsAny(r.ID, "\x00\r\n") {
		return errors.New("request_id is not an id")
	}
	if r.Response == "" {
		return errors.New("no response_url")
	}
	for _, u := range []struct{ name, v string }{{"response_url", r.Response}, {"status_url", r.statusURL()}, {"cancel_url", r.cancelURL()}} {
		pu, err := url.Parse(u.v)
		if err != nil || !pu.IsAbs() || pu.Host == "" {
			return fmt.Errorf("%s is not an absolute URL", u.name)
		}
		if !p.sameOrigin(u.v) {
			return fmt.Errorf("%s is not on %s", u.name, p.origin)
		}
	}
	return nil
}

// decodeRef reads a Ref recorded by Submit.
func (p *Provider) decodeRef(s string) (ref, error) {
	var r ref
	if len(s) >= maxRef || json.Unmarshal([]byte(s), &r) != nil {
		return ref{}, errors.New("the handle is not a fal request reference")
	}
	if err := p.checkRef(r); err != nil {
		return ref{}, fmt.Errorf("the handle is not usable: %s", err)
	}
	return r, nil
}

// RequestID returns the fal request id a Ref (as returned by Submit)
// records, so a webhook's request_id can be matched with its task.
func RequestID(encRef string) (string, error) {
	var r ref
	if json.Unmarshal([]byte(encRef), &r) != nil || r.ID == "" {
		return "", errors.New("fal: not a fal request reference")
	}
	return r.ID, nil
}
