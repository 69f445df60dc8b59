package local

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"math"
	"strconv"
	"strings"
)

const (
	maxImageSide = 256 // longest side of a rendered PNG
	maxVideoSide = 128 // longest side of a rendered GIF
	videoFrames  = 12
	frameDelay   = 8 // hundredths of a second: ~12 fps, a one-second loop
)

// imageSize parses "WxH" and scales it down to fit maxImageSide, keeping the
// aspect ratio. Anything unparsable gives a square: sizes are validated
// against the price list before a job gets here.
func imageSize(size string) (w, h int) {
	w, h, ok := parseWxH(size)
	if !ok {
		return maxImageSide, maxImageSide
	}
	return fit(w, h, maxImageSide)
}

// videoSize maps a resolution to GIF dimensions: "WxH" keeps its aspect
// ratio; "720p"-style names, like anything else, are 16:9.
func videoSize(res string) (w, h int) {
	if w, h, ok := parseWxH(res); ok {
		return fit(w, h, maxVideoSide)
	}
	return maxVideoSide, maxVideoSide * 9 / 16
}

func parseWxH(s string) (w, h int, ok bool) {
	ws, hs, found := strings.Cut(strings.ToLower(s), "x")
	if !found {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	// The upper bound keeps the scaling arithmetic far from overflow.
	const limit = 1 << 20
	if err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > limit || h > limit {
		return 0, 0, false
	}
	return w, h, true
}

// fit scales (w, h) down, rounding, so the longest side is at most limit.
// Small sizes are kept: rendering them larger would only waste disk.
func fit(w, h, limit int) (int, int) {
	switch long := max(w, h); {
	case long <= limit:
		return w, h
	case w >= h:
		return limit, max(1, (h*limit+w/2)/w)
	default:
		return max(1, (w*limit+h/2)/h), limit
	}
}

// stream is a deterministic byte source: SHA-256 of the seed and a counter.
// It is used instead of math/rand, whose algorithms may change, so that a
// name keeps meaning the same picture (names are content addresses, and the
// files are served as immutable).
type stream struct {
	seed  [sha256.Size]byte
	block [sha256.Size]byte
	ctr   uint32
	pos   int
}

func newStream(seed [sha256.Size]byte) *stream {
	return &stream{seed: seed, pos: sha256.Size}
}

func (s *stream) uint16() uint16 {
	if s.pos+2 > len(s.block) {
		var in [sha256.Size + 4]byte
		copy(in[:], s.seed[:])
		binary.BigEndian.PutUint32(in[sha256.Size:], s.ctr)
		s.ctr++
		s.block = sha256.Sum256(in[:])
		s.pos = 0
	}
	v := binary.BigEndian.Uint16(s.block[s.pos:])
	s.pos += 2
	return v
}

// unit returns a number in [0, 1].
func (s *stream) unit() float64 { return float64(s.uint16()) / math.MaxUint16 }

// between returns a number in [lo, hi].
func (s *stream) between(lo, hi float64) float64 { return lo + (hi-lo)*s.unit() }

type shapeKind int

const (
	disc shapeKind = iota
	ring
	band
)

// shape is one figure of a scene. Coordinates are in units of the longest
// side, so a scene looks the same at any size.
type shape struct {
	kind         shapeKind
	x, y, r      float64 // centre and radius (half width for a band)
	angle        float64 // a band's direction
	orbit, phase float64 // animation: the centre circles with this radius
	col          color.RGBA
	alpha        float64
}

// scene is the picture a seed describes: a two-colour gradient and a few
// translucent shapes in related hues.
type scene struct {
	w, h     int
	long     float64
	bg0, bg1 color.RGBA
	angle    float64 // gradient direction
	shapes   []shape
}

func newScene(seed [sha256.Size]byte, w, h int) *scene {
	s := newStream(seed)
	sc := &scene{w: w, h: h, long: float64(max(w, h))}
	hue := s.between(0, 360)
	sc.bg0 = hsv(hue, s.between(0.5, 0.8), s.between(0.15, 0.35))
	sc.bg1 = hsv(hue+s.between(30, 90), s.between(0.4, 0.7), s.between(0.75, 0.95))
	sc.angle = s.between(0, 2*math.Pi)
	n := 3 + int(s.uint16()%4)
	for range n {
		sc.shapes = append(sc.shapes, shape{
			kind:  shapeKind(s.uint16() % 3),
			x:     s.unit() * float64(w) / sc.long,
			y:     s.unit() * float64(h) / sc.long,
			r:     s.between(0.08, 0.3),
			angle: s.between(0, math.Pi),
			orbit: s.between(0.03, 0.12),
			phase: s.between(0, 2*math.Pi),
			col:   hsv(hue+s.between(120, 240), s.between(0.55, 0.9), s.between(0.8, 1)),
			alpha: s.between(0.45, 0.8),
		})
	}
	return sc
}

// placed is a shape positioned for one frame.
type placed struct {
	shape
	cx, cy, sin, cos float64
}

// place positions the shapes at loop position t in [0, 1). Every motion is
// periodic in t, so the last frame flows into the first.
func (sc *scene) place(t float64) []placed {
	ps := make([]placed, len(sc.shapes))
	for i, s := range sc.shapes {
		a := s.phase + 2*math.Pi*t
		// A band looks the same turned by π, so half a turn per loop is seamless.
		sin, cos := math.Sincos(s.angle + math.Pi*t)
		ps[i] = placed{shape: s, cx: s.x + s.orbit*math.Cos(a), cy: s.y + s.orbit*math.Sin(a), sin: sin, cos: cos}
	}
	return ps
}

func (p *placed) contains(u, v float64) bool {
	du, dv := u-p.cx, v-p.cy
	switch p.kind {
	case disc:
		return du*du+dv*dv <= p.r*p.r
	case ring:
		d2 := du*du + dv*dv
		return d2 <= p.r*p.r && d2 >= 0.49*p.r*p.r
	default: // band: distance from the line through the centre
		return math.Abs(-du*p.sin+dv*p.cos) <= p.r*0.35
	}
}

// gradient returns a function giving the background position in [0, 1]
// of a pixel centre, for a gradient turned by angle.
func (sc *scene) gradient(angle float64) func(u, v float64) float64 {
	sin, cos := math.Sincos(angle)
	cu, cv := float64(sc.w)/sc.long/2, float64(sc.h)/sc.long/2
	// The projection of a corner is the extreme, so this spans the image.
	ext := math.Abs(cu*cos) + math.Abs(cv*sin)
	return func(u, v float64) float64 {
		return ((u-cu)*cos + (v-cv)*sin + ext) / (2 * ext)
	}
}

// renderPNG draws the seed's scene as a PNG.
func renderPNG(seed [sha256.Size]byte, w, h int) ([]byte, error) {
	sc := newScene(seed, w, h)
	ps := sc.place(0)
	grad := sc.gradient(sc.angle)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		v := (float64(y) + 0.5) / sc.long
		for x := range w {
			u := (float64(x) + 0.5) / sc.long
			c := lerp(sc.bg0, sc.bg1, grad(u, v))
			for i := range ps {
				if ps[i].contains(u, v) {
					c = lerp(c, ps[i].col, ps[i].alpha)
				}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	// Best speed: a render is on the request path, and these flat images
	// compress well anyway.
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return buf.Bytes(), nil
}

// renderGIF draws the seed's scene as a looping animation: the gradient
// turns and the shapes circle. Shapes are opaque here so that one shared
// palette (gradient steps plus one entry per shape) fits every frame
// exactly, with no dithering.
func renderGIF(seed [sha256.Size]byte, w, h int) ([]byte, error) {
	sc := newScene(seed, w, h)
	steps := 256 - len(sc.shapes)
	pal := make(color.Palette, 0, 256)
	for i := range steps {
		pal = append(pal, lerp(sc.bg0, sc.bg1, float64(i)/float64(steps-1)))
	}
	for _, s := range sc.shapes {
		pal = append(pal, s.col)
	}

	g := &gif.GIF{
		Image:     make([]*image.Paletted, videoFrames),
		Delay:     make([]int, videoFrames),
		LoopCount: 0, // loop forever
		Config:    image.Config{ColorModel: pal, Width: w, Height: h},
	}
	for f := range videoFrames {
		t := float64(f) / videoFrames
		ps := sc.place(t)
		grad := sc.gradient(sc.angle + 2*math.Pi*t)
		img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for y := range h {
			v := (float64(y) + 0.5) / sc.long
			for x := range w {
				u := (float64(x) + 0.5) / sc.long
				idx := uint8(math.Round(grad(u, v) * float64(steps-1)))
				for i := range ps {
					if ps[i].contains(u, v) {
						idx = uint8(steps + i)
					}
				}
				img.Pix[y*img.Stride+x] = idx
			}
		}
		g.Image[f], g.Delay[f] = img, frameDelay
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, g); err != nil {
		return nil, fmt.Errorf("encode gif: %w", err)
	}
	return buf.Bytes(), nil
}

// lerp mixes a towards b by t in [0, 1]; the result is opaque.
func lerp(a, b color.RGBA, t float64) color.RGBA {
	t = math.Max(0, math.Min(1, t))
	mix := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + (float64(y)-float64(x))*t)) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
}

// hsv converts a hue in degrees (any value), saturation and value in
// [0, 1] to an opaque colour.
func hsv(h, s, v float64) color.RGBA {
	h = math.Mod(h, 360)
	if h < 0 {
		h += 360
	}
	c := v * s
	x := c * (1 - math.Abs(math.Mod(h/60, 2)-1))
	m := v - c
	var r, g, b float64
	switch {
	case h < 60:
		r, g, b = c, x, 0
	case h < 120:
		r, g, b = x, c, 0
	case h < 180:
		r, g, b = 0, c, x
	case h < 240:
		r, g, b = 0, x, c
	case h < 300:
		r, g, b = x, 0, c
	default:
		r, g, b = c, 0, x
	}
	to8 := func(f float64) uint8 { return uint8(math.Round((f + m) * 255)) }
	return color.RGBA{to8(r), to8(g), to8(b), 0xff}
}
