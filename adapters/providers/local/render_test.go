package local

import (
	"crypto/sha256"
	"testing"
)

func BenchmarkRenderPNG(b *testing.B) {
	seed := sha256.Sum256([]byte("x"))
	for b.Loop() {
		renderPNG(seed, 256, 256)
	}
}

func BenchmarkRenderGIF(b *testing.B) {
	seed := sha256.Sum256([]byte("x"))
	for b.Loop() {
		renderGIF(seed, 128, 72)
	}
}
