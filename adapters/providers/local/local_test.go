package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/gif"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/ledger/tasks"
)

const testBase = "http://ledgerd.test"

func newTest(t testing.TB) (*Provider, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "files") // New must create it
	p, err := New(Config{Dir: dir, BaseURL: testBase, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return p, dir
}

func imageJob(prompt, size string) tasks.Job {
	return tasks.Job{Model: "nano-banana-2", ProviderModel: "nano-banana-2", Type: pricing.TypeImage, Prompt: prompt, Size: size}
}

func videoJob(typ pricing.Type, prompt, res string) tasks.Job {
	return tasks.Job{Model: "kling-3", ProviderModel: "kling-3", Type: typ, Prompt: prompt, Duration: 5, Resolution: res}
}

// fileOf reads the file an output URL names.
func fileOf(t *testing.T, dir, url string) []byte {
	t.Helper()
	name, ok := strings.CutPrefix(url, testBase+"/files/")
	if !ok {
		t.Fatalf("url %q is not under %s/files/", url, testBase)
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func submit(t *testing.T, p *Provider, job tasks.Job) tasks.Handle {
	t.Helper()
	h, err := p.Submit(context.Background(), job)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if !h.Done {
		t.Fatal("Submit: not done")
	}
	return h
}

func TestNew(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Error("New without Dir: want error")
	}
	p, dir := newTest(t)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("dir not created: %v", err)
	}
	if p.Name() != "local" {
		t.Errorf("Name = %q", p.Name())
	}
	if err := p.Cancel(context.Background(), imageJob("x", ""), "local_x"); err != nil {
		t.Errorf("Cancel = %v", err)
	}
}

func TestImageSizes(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	tests := []struct {
		size string
		w, h int
	}{
		{"1024x1024", 256, 256},
		{"1792x1024", 256, 146},
		{"1024x1792", 146, 256},
		{"512x512", 256, 256},
		{"768x768", 256, 256},
		{"1000x10", 256, 3},
		{"100x50", 100, 50}, // small sizes are kept
		{"", 256, 256},
		{"bogus", 256, 256},
		{"0x512", 256, 256},
		{"-5x5", 256, 256},
	}
	for _, tt := range tests {
		t.Run(tt.size, func(t *testing.T) {
			h := submit(t, p, imageJob("a red fox", tt.size))
			out := h.Output
			if out.VideoURL != "" || len(out.URLs) != 1 || out.URLs[0] != out.ImageURL || !strings.HasSuffix(out.ImageURL, ".png") {
				t.Fatalf("output = %+v", out)
			}
			if h.Ref != "local_"+strings.TrimPrefix(out.ImageURL, testBase+"/files/") {
				t.Errorf("Ref = %q for %q", h.Ref, out.ImageURL)
			}
			img, err := png.Decode(bytes.NewReader(fileOf(t, dir, out.ImageURL)))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			b := img.Bounds()
			if b.Dx() != tt.w || b.Dy() != tt.h {
				t.Errorf("size %q: got %dx%d, want %dx%d", tt.size, b.Dx(), b.Dy(), tt.w, tt.h)
			}
			// The aspect ratio survives scaling to within a pixel.
			var sw, sh int
			if n, _ := fmt.Sscanf(tt.size, "%dx%d", &sw, &sh); n == 2 && sw > 0 && sh > 0 {
				if max(b.Dx(), b.Dy()) > maxImageSide {
					t.Errorf("longest side %d > %d", max(b.Dx(), b.Dy()), maxImageSide)
				}
				if sw >= sh {
					if want := float64(b.Dx()) * float64(sh) / float64(sw); absf(float64(b.Dy())-want) > 1 {
						t.Errorf("height %d, want ≈%.1f", b.Dy(), want)
					}
				} else if want := float64(b.Dy()) * float64(sw) / float64(sh); absf(float64(b.Dx())-want) > 1 {
					t.Errorf("width %d, want ≈%.1f", b.Dx(), want)
				}
			}
		})
	}
}

func absf(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestImageDeterministic(t *testing.T) {
	t.Parallel()
	p1, dir1 := newTest(t)
	p2, dir2 := newTest(t) // a separate store: the bytes are rendered twice
	base := submit(t, p1, imageJob("a red fox", "1024x1024")).Output.ImageURL
	baseBytes := fileOf(t, dir1, base)

	again := submit(t, p2, imageJob("a red fox", "1024x1024")).Output.ImageURL
	if again != base {
		t.Errorf("same inputs, different URL: %s vs %s", again, base)
	}
	if !bytes.Equal(fileOf(t, dir2, again), baseBytes) {
		t.Error("same inputs, different bytes")
	}

	for _, tt := range []struct {
		name string
		job  tasks.Job
	}{
		{"prompt", imageJob("a blue whale", "1024x1024")},
		{"size", imageJob("a red fox", "512x512")},
		{"model", func() tasks.Job { j := imageJob("a red fox", "1024x1024"); j.ProviderModel = "dall-e-3"; return j }()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url := submit(t, p1, tt.job).Output.ImageURL
			if url == base {
				t.Fatal("different input, same URL")
			}
			if bytes.Equal(fileOf(t, dir1, url), baseBytes) {
				t.Error("different input, same bytes")
			}
		})
	}
}

func TestVideoGIF(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	tests := []struct {
		typ  pricing.Type
		res  string
		w, h int
	}{
		{pricing.TypeVideo, "720p", 128, 72},
		{pricing.TypeVideo, "1080p", 128, 72},
		{pricing.TypeVideo, "", 128, 72},
		{pricing.TypeVideo, "720x1280", 72, 128},
		{pricing.TypeDirector, "720p", 128, 72},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ)+"_"+tt.res, func(t *testing.T) {
			out := submit(t, p, videoJob(tt.typ, "waves at dusk", tt.res)).Output
			if out.ImageURL != "" || len(out.URLs) != 1 || out.URLs[0] != out.VideoURL || !strings.HasSuffix(out.VideoURL, ".gif") {
				t.Fatalf("output = %+v", out)
			}
			g, err := gif.DecodeAll(bytes.NewReader(fileOf(t, dir, out.VideoURL)))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(g.Image) < 2 {
				t.Fatalf("%d frames, want ≥ 2", len(g.Image))
			}
			if g.LoopCount != 0 {
				t.Errorf("LoopCount = %d, want 0 (forever)", g.LoopCount)
			}
			for i, d := range g.Delay {
				if d <= 0 {
					t.Errorf("frame %d delay %d", i, d)
				}
			}
			if b := g.Image[0].Bounds(); b.Dx() != tt.w || b.Dy() != tt.h {
				t.Errorf("got %dx%d, want %dx%d", b.Dx(), b.Dy(), tt.w, tt.h)
			}
			if bytes.Equal(g.Image[0].Pix, g.Image[1].Pix) {
				t.Error("frames 0 and 1 are identical: no animation")
			}
		})
	}
	// Video and director share inputs here but are different products.
	v := submit(t, p, videoJob(pricing.TypeVideo, "waves at dusk", "720p")).Output.VideoURL
	d := submit(t, p, videoJob(pricing.TypeDirector, "waves at dusk", "720p")).Output.VideoURL
	if v == d {
		t.Error("video and director share a file")
	}
}

func TestNormalizePrompt(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", ""},
		{" \t\n ", ""},
		{"a cat", "A cat."},
		{"  a   cat \n in\tspace  ", "A cat in space."},
		{"A cat.", "A cat."},
		{"what is this?", "What is this?"},
		{"wow!", "Wow!"},
		{"3 cats", "3 cats."},
		{"élan vital", "Élan vital."},
		{"ends with comma,", "Ends with comma,."},
		{"x", "X."},
		{"already Fine.", "Already Fine."},
	}
	for _, tt := range tests {
		if got := NormalizePrompt(tt.in); got != tt.want {
			t.Errorf("NormalizePrompt(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	p, _ := newTest(t)
	if got := submit(t, p, imageJob("  a   cat ", "")).Output.EnhancedPrompt; got != "A cat." {
		t.Errorf("EnhancedPrompt = %q", got)
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	for _, job := range []tasks.Job{
		imageJob("", "1024x1024"),
		imageJob(" \t\n", "1024x1024"),
		videoJob(pricing.TypeVideo, "   ", "720p"),
		{Type: "audio", Prompt: "a song"},
	} {
		if _, err := p.Submit(context.Background(), job); !errors.Is(err, tasks.ErrInvalidInput) {
			t.Errorf("Submit(%q, %q) = %v, want ErrInvalidInput", job.Type, job.Prompt, err)
		}
		if _, _, err := p.Poll(context.Background(), job, "local_x"); !errors.Is(err, tasks.ErrInvalidInput) {
			t.Errorf("Poll(%q, %q) = %v, want ErrInvalidInput", job.Type, job.Prompt, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("invalid input wrote %d files", len(ents))
	}
}

func TestFailureRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate         float64
		wantFailures func(n int) bool
	}{
		{0, func(n int) bool { return n == 0 }},
		{1, func(n int) bool { return n == 100 }},
		{0.5, func(n int) bool { return n > 20 && n < 80 }},
	}
	for _, tt := range tests {
		p, _ := newTest(t)
		job := imageJob("a red fox", "")
		job.Options.FailureRate = tt.rate
		failures := 0
		for range 100 {
			_, err := p.Submit(context.Background(), job)
			switch {
			case err == nil:
			case errors.Is(err, tasks.ErrProvider) && strings.Contains(err.Error(), "local provider: simulated failure"):
				failures++
			default:
				t.Fatalf("rate %v: unexpected error %v", tt.rate, err)
			}
		}
		if !tt.wantFailures(failures) {
			t.Errorf("rate %v: %d/100 failures", tt.rate, failures)
		}
	}
}

func TestFailureSeedDeterministic(t *testing.T) {
	t.Parallel()
	run := func() []bool {
		p, _ := newTest(t) // Seed: 1
		job := imageJob("a red fox", "")
		job.Options.FailureRate = 0.5
		var got []bool
		for range 32 {
			_, err := p.Submit(context.Background(), job)
			got = append(got, err != nil)
		}
		return got
	}
	a, b := run(), run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different failures at %d: %v vs %v", i, a, b)
		}
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	p, _ := newTest(t)
	slow := imageJob("a red fox", "")
	slow.Options.LatencyMS = 10_000

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := p.Submit(ctx, slow)
		if !errors.Is(err, tasks.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("returned after %v, want promptly", d)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(10*time.Millisecond, cancel)
		_, err := p.Submit(ctx, slow)
		if !errors.Is(err, context.Canceled) || errors.Is(err, tasks.ErrTimeout) {
			t.Errorf("err = %v, want context.Canceled only", err)
		}
	})
	t.Run("waits", func(t *testing.T) {
		job := imageJob("a red fox", "")
		job.Options.LatencyMS = 30
		start := time.Now()
		submit(t, p, job)
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Errorf("returned after %v, want ≥ 30ms", d)
		}
	})
}

func TestPoll(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	jobs := []tasks.Job{imageJob("a red fox", "1792x1024"), videoJob(pricing.TypeDirector, "waves", "720p")}
	for _, job := range jobs {
		h := submit(t, p, job)
		done, out, err := p.Poll(context.Background(), job, h.Ref)
		if err != nil || !done || !equalOutput(out, h.Output) {
			t.Errorf("Poll = %v %+v %v, want done %+v", done, out, err, h.Output)
		}

		// A restarted ledgerd: a fresh provider over the same directory.
		restarted, err := New(Config{Dir: dir, BaseURL: testBase})
		if err != nil {
			t.Fatal(err)
		}
		done, out, err = restarted.Poll(context.Background(), job, h.Ref)
		if err != nil || !done || !equalOutput(out, h.Output) {
			t.Errorf("Poll after restart = %v %+v %v", done, out, err)
		}

		// A file lost since is rendered again, identically.
		path := filepath.Join(dir, strings.TrimPrefix(h.Ref, "local_"))
		want, _ := os.ReadFile(path)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		restarted2, _ := New(Config{Dir: dir, BaseURL: testBase})
		if done, _, err := restarted2.Poll(context.Background(), job, h.Ref); err != nil || !done {
			t.Errorf("Poll of a lost file = %v %v", done, err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("lost file not restored identically: %v", err)
		}

		for _, ref := range []string{"", "local_", "x_" + strings.TrimPrefix(h.Ref, "local_"), "local_00000000000000000000000000000000.png"} {
			if _, _, err := p.Poll(context.Background(), job, ref); !errors.Is(err, tasks.ErrProvider) {
				t.Errorf("Poll(ref %q) = %v, want ErrProvider", ref, err)
			}
		}
	}
}

func equalOutput(a, b tasks.Output) bool {
	return a.ImageURL == b.ImageURL && a.VideoURL == b.VideoURL && a.EnhancedPrompt == b.EnhancedPrompt &&
		len(a.URLs) == 1 && len(b.URLs) == 1 && a.URLs[0] == b.URLs[0]
}

func TestFileServer(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	img := submit(t, p, imageJob("a red fox", "")).Output.ImageURL
	vid := submit(t, p, videoJob(pricing.TypeVideo, "waves", "720p")).Output.VideoURL
	imgName := strings.TrimPrefix(img, testBase+"/files/")
	vidName := strings.TrimPrefix(vid, testBase+"/files/")
	if err := os.Mkdir(filepath.Join(dir, strings.Repeat("a", 32)+".png"), 0o755); err != nil {
		t.Fatal(err) // a directory with a valid-looking name
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := http.StripPrefix("/files", p.FileServer())

	tests := []struct {
		method, path string
		code         int
		ctype        string
		body         []byte
	}{
		{"GET", "/files/" + imgName, 200, "image/png", fileOf(t, dir, img)},
		{"GET", "/files/" + vidName, 200, "image/gif", fileOf(t, dir, vid)},
		{"HEAD", "/files/" + imgName, 200, "image/png", nil},
		{"POST", "/files/" + imgName, 405, "", nil},
		{"GET", "/files/../x", 404, "", nil},
		{"GET", "/files/../secret", 404, "", nil},
		{"GET", "/files/%2e%2e/secret", 404, "", nil},
		{"GET", "/files/" + strings.Repeat("0", 32) + ".png", 404, "", nil}, // unknown
		{"GET", "/files/" + strings.ToUpper(imgName[:32]) + ".png", 404, "", nil},
		{"GET", "/files/" + imgName[:32] + ".jpg", 404, "", nil},
		{"GET", "/files/" + strings.Repeat("a", 32) + ".png", 404, "", nil}, // a directory
		{"GET", "/files/", 404, "", nil},
		{"GET", "/files", 404, "", nil},
		{"GET", "/files/x/" + imgName, 404, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.code)
			}
			if tt.code != 200 {
				if res.Header.Get("Cache-Control") != "" {
					t.Error("an error is cacheable")
				}
				return
			}
			if got := res.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=31536000") {
				t.Errorf("Cache-Control %q", cc)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Error("body differs from the file")
			}
			if tt.method == "HEAD" && len(body) != 0 {
				t.Error("HEAD has a body")
			}
		})
	}

	t.Run("not modified", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/files/"+imgName, nil)
		req.Header.Set("If-None-Match", `"`+imgName[:32]+`"`)
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified {
			t.Errorf("status %d, want 304", rec.Code)
		}
	})

	t.Run("lost file is rendered again", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, imgName)); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/files/"+imgName, nil))
		if rec.Code != 404 {
			t.Fatalf("status %d, want 404", rec.Code)
		}
		submit(t, p, imageJob("a red fox", ""))
		if _, err := os.Stat(filepath.Join(dir, imgName)); err != nil {
			t.Errorf("not rendered again: %v", err)
		}
	})
}

func TestConcurrentSamePrompt(t *testing.T) {
	t.Parallel()
	p, dir := newTest(t)
	job := imageJob("a crowded room", "1024x1024")
	const n = 50
	outs := make([]tasks.Output, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			h, err := p.Submit(context.Background(), job)
			outs[i], errs[i] = h.Output, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !equalOutput(outs[i], outs[0]) {
			t.Fatalf("goroutine %d: output %+v, want %+v", i, outs[i], outs[0])
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%d files, want 1: %v", len(ents), names)
	}
	if _, err := png.Decode(bytes.NewReader(fileOf(t, dir, outs[0].ImageURL))); err != nil {
		t.Errorf("decode: %v", err)
	}
}

// TestCacheHit checks a repeated job neither renders nor touches the disk:
// with the file removed behind its back, the provider still answers and
// does not put it back.
func TestCacheHit(t *testing.T) {
	// Not parallel: AllocsPerRun forbids it.
	p, dir := newTest(t)
	job := imageJob("a red fox", "1024x1024")
	path := filepath.Join(dir, strings.TrimPrefix(submit(t, p, job).Ref, "local_"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	submit(t, p, job)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache hit touched the disk: stat = %v", err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.Submit(context.Background(), job); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 8 {
		t.Errorf("cache hit allocates %.0f times, want ≤ 8", allocs)
	}
}

func BenchmarkSubmitCached(b *testing.B) {
	p, _ := newTest(b)
	job := imageJob("a red fox in the snow", "1024x1024")
	ctx := context.Background()
	if _, err := p.Submit(ctx, job); err != nil { // render once
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Submit(ctx, job); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
