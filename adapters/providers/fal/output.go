package fal

import (
	"encoding/json"
	"errors"
	"net/url"

	"github.com/ledgerd/ledgerd/ledger/tasks"
)

// falFile is fal's File object; only its url matters here.
type falFile struct {
	URL string `json:"url"`
}

// result is the part of a model's output ledgerd records. Each model has
// its own schema; image models return images[] (some a single image),
// video models a video.
type result struct {
	Images        []falFile       `json:"images"`
	Image         *falFile        `json:"image"`
	Video         *falFile        `json:"video"`
	Prompt        json.RawMessage `json:"prompt"`
	RevisedPrompt json.RawMessage `json:"revised_prompt"`
}

// parseOutput maps a model's output: the first image is ImageURL, the
// video VideoURL, and every URL is in URLs. Only http(s) URLs are taken
// (a data: URI from sync_mode is not something to record). The enhanced
// prompt is revised_prompt or prompt when the model returns one, else
// fallback.
func parseOutput(body []byte, fallback string) (tasks.Output, error) {
	var r result
	if err := json.Unmarshal(body, &r); err != nil {
		return tasks.Output{}, errors.New("malformed result (not the model's JSON output)")
	}
	var out tasks.Output
	add := func(f *falFile) string {
		if f == nil || !httpURL(f.URL) {
			return ""
		}
		out.URLs = append(out.URLs, f.URL)
		return f.URL
	}
	for i := range r.Images {
		if u := add(&r.Images[i]); u != "" && out.ImageURL == "" {
			out.ImageURL = u
		}
	}
	if u := add(r.Image); u != "" && out.ImageURL == "" {
		out.ImageURL = u
	}
	out.VideoURL = add(r.Video)
	if len(out.URLs) == 0 {
		return tasks.Output{}, errors.New("the result has no image or video URL")
	}
	out.EnhancedPrompt = fallback
	for _, raw := range []json.RawMessage{r.RevisedPrompt, r.Prompt} {
		var s string
		if len(raw) > 0 && json.Unmarshal(raw, &s) == nil && s != "" {
			out.EnhancedPrompt = s
			break
		}
	}
	return out, nil
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}
