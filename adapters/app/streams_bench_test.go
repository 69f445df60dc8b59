package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleStreams opens 1,000 SSE subscriptions (each gets its
// snapshot, then idles) and reports what one costs: heap bytes and
// goroutines per subscriber. The client side is raw sockets in the same
// process, so the heap figure also holds both ends' connection structs.
func BenchmarkIdleStreams(b *testing.B) {
	const subscribers = 1000
	a := startAppTB(b, testConfigTB(b, testDirTB(b), nil))
	defer closeApp(b, a)
	admin := loginToken(b, a.URL())
	token := streamCustomer(b, a.URL(), admin)
	u, _ := url.Parse(a.URL())
	for b.Loop() {
		before, stackBefore := heap()
		goroutines := runtime.NumGoroutine()
		conns := make([]net.Conn, 0, subscribers)
		began := time.Now()
		for range subscribers {
			c, err := net.Dial("tcp", u.Host)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.WriteString(c, "GET /api/v1/usage/stream HTTP/1.1\r\nHost: "+u.Host+"\r\nAuthorization: Bearer "+token+"\r\n\r\n"); err != nil {
				b.Fatal(err)
			}
			// Wait for the snapshot, so the subscription is complete.
			br := bufio.NewReaderSize(c, 4096)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					b.Fatalf("reading the stream: %v", err)
				}
				if strings.HasPrefix(line, "event: snapshot") {
					break
				}
			}
			conns = append(conns, c)
		}
		opened := time.Since(began)
		time.Sleep(500 * time.Millisecond) // let the connect-time garbage go
		after, stackAfter := heap()
		b.ReportMetric(float64(after-before)/subscribers, "heap-B/subscriber")
		b.ReportMetric(float64(stackAfter-stackBefore)/subscribers, "stack-B/subscriber")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/subscribers, "goroutines/subscriber")
		b.ReportMetric(float64(subscribers)/opened.Seconds(), "subscribes/s")
		for _, c := range conns {
			c.Close()
		}
	}
}

// heap reports live heap and goroutine stack bytes.
func heap() (heapBytes, stackBytes uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// streamCustomer creates a customer and returns its session token.
func streamCustomer(b *testing.B, base, admin string) string {
	b.Helper()
	req, _ := http.NewRequest("POST", base+"/api/admin/accounts",
		bytes.NewBufferString(`{"email":"idle@example.com","password":"idle-password","plan":"api"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		b.Fatalf("create account: %d", res.StatusCode)
	}
	res, err = http.Post(base+"/api/auth/login", "application/json", bytes.NewBufferString(`{"email":"idle@example.com","password":"idle-password"}`))
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Token string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Token == "" {
		b.Fatalf("login: %v", err)
	}
	return out.Token
}
