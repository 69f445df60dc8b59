package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/validation"
	"github.com/ledgerd/ledgerd/projections/live"
)

// Streams is the live hub as the HTTP layer uses it.
type Streams interface {
	Subscribe(ctx context.Context, req live.Request) (*live.Subscription, error)
	Stats() live.Stats
}

// keepAlive is how often an idle stream gets a ping, so proxies and
// browsers keep it open.
const keepAlive = 15 * time.Second

// streamCredential is the caller's credential on a stream endpoint: the
// usual headers, or ?token= (a session token or an API key), since
// browsers' EventSource and WebSocket cannot set headers. The query
// string of these paths is never logged (the request log writes the path
// only).
func (s *Server) streamCredential(w http.ResponseWriter, r *http.Request) string {
	if c := s.credential(w, r); c != "" {
		return c
	}
	return r.URL.Query().Get("token")
}

// streamRequest authenticates a stream and says what it follows: the
// caller's account (an API key needs usage:read), or, for staff where
// allowed, the platform.
func (s *Server) streamRequest(w http.ResponseWriter, r *http.Request, staffAllowed, staffOnly bool) (live.Request, error) {
	var req live.Request
	p, err := s.authenticateCredential(r, s.streamCredential(w, r))
	if err != nil {
		return req, err
	}
	switch {
	case p.KeyID == "" && p.Role.IsStaff():
		if !staffAllowed || !roleReader(p.Role, http.MethodGet) {
			return req, errStatus(http.StatusForbidden, "forbidden", "This stream is for customer accounts; staff use /api/admin/usage/stream")
		}
		req.Staff = true
	case staffOnly:
		return req, errForbidden
	case p.AccountID == "":
		return req, errForbidden
	case p.KeyID != "" && !p.Scopes.Has(apikey.ScopeUsage):
		return req, errStatus(http.StatusForbidden, "forbidden_scope", "This API key lacks the "+string(apikey.ScopeUsage)+" scope")
	default:
		req.AccountID = p.AccountID
		// The snapshot shows this instance's writes to the account, as
		// GET /api/v1/wallet does.
		s.awaitOwnWrites(r.Context(), w, "accounts", s.cfg.Commands.AccountSeq(p.AccountID))
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("last_event_id")
	}
	if last != "" {
		n, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			return req, validation.Field("Last-Event-ID", "must be an id this stream sent (a stream sequence)")
		}
		req.Resume, req.LastEventID = true, n
	}
	return req, nil
}

// usageStream serves the caller's account as Server-Sent Events.
func (s *Server) usageStream(w http.ResponseWriter, r *http.Request) {
	s.sse(w, r, false, false)
}

// adminUsageStream serves the platform totals to staff as Server-Sent
// Events.
func (s *Server) adminUsageStream(w http.ResponseWriter, r *http.Request) {
	s.sse(w, r, true, true)
}

func (s *Server) sse(w http.ResponseWriter, r *http.Request, staffAllowed, staffOnly bool) {
	if s.cfg.Streams == nil {
		s.writeError(w, r, errNotFound)
		return
	}
	req, err := s.streamRequest(w, r, staffAllowed, staffOnly)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// A write stuck on a client that stopped reading is cut short when
	// the hub drops it.
	req.OnDrop = func() { _ = rc.SetWriteDeadline(time.Now()) }
	sub, err := s.cfg.Streams.Subscribe(r.Context(), req)
	if err != nil {
		s.writeError(w, r, readErr(err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.holdOpen(rc)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	write := func(g []*live.Message) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		for _, m := range g {
			if _, err := w.Write(m.SSE()); err != nil {
				return err
			}
		}
		return rc.Flush()
	}
	ping := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		if _, err := w.Write([]byte(": ping\n\n")); err != nil {
			return err
		}
		return rc.Flush()
	}
	err = sub.Serve(ctx, keepAlive, write, ping)
	s.streamEnded(r, err)
}

// holdOpen lifts the server's whole-request read and write deadlines,
// which would otherwise end a long-lived response: each write sets its
// own deadline instead.
func (s *Server) holdOpen(rc *http.ResponseController) {
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

func (s *Server) streamEnded(r *http.Request, err error) {
	switch {
	case errors.Is(err, live.ErrDropped):
		s.log.Info("stream subscriber dropped: not keeping up", "request_id", requestID(r.Context()), "route", r.Pattern)
	default:
		s.log.Debug("stream ended", "request_id", requestID(r.Context()), "route", r.Pattern, "reason", err)
	}
}

// wsUsage serves the same messages over a WebSocket: the caller's
// account, or, for staff, the platform.
func (s *Server) wsUsage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Streams == nil {
		s.writeError(w, r, errNotFound)
		return
	}
	req, err := s.streamRequest(w, r, true, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	// Cancelling the context of a write closes the connection: that is
	// how a dropped subscriber's stuck write ends.
	req.OnDrop = cancel
	sub, err := s.cfg.Streams.Subscribe(ctx, req)
	if err != nil {
		s.writeError(w, r, readErr(err))
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		sub.Close()
		s.log.Debug("websocket handshake failed", "request_id", requestID(r.Context()), "err", err)
		return
	}
	// Reading is only for control frames: the context ends when the
	// client closes.
	ctx = c.CloseRead(ctx)
	write := func(g []*live.Message) error {
		wctx, wcancel := context.WithTimeout(ctx, s.cfg.StreamWriteTimeout)
		defer wcancel()
		for _, m := range g {
			if err := c.Write(wctx, websocket.MessageText, m.Frame()); err != nil {
				return err
			}
		}
		return nil
	}
	ping := func() error {
		pctx, pcancel := context.WithTimeout(ctx, s.cfg.StreamWriteTimeout)
		defer pcancel()
		return c.Ping(pctx)
	}
	err = sub.Serve(ctx, keepAlive, write, ping)
	s.streamEnded(r, err)
	switch {
	case errors.Is(err, live.ErrDropped):
		c.Close(websocket.StatusTryAgainLater, "dropped: not keeping up")
	case s.streams.Err() != nil || errors.Is(err, live.ErrClosed):
		c.Close(websocket.StatusGoingAway, "server shutting down")
	default:
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// streamCollector reports the live streams when scraped.
type streamCollector struct{ s Streams }

var (
	streamSubs     = prometheus.NewDesc("ledgerd_stream_subscribers", "Open live stream subscriptions.", []string{"kind"}, nil)
	streamDropped  = prometheus.NewDesc("ledgerd_stream_dropped_total", "Stream subscribers dropped for not keeping up.", nil, nil)
	streamResumes  = prometheus.NewDesc("ledgerd_stream_connections_total", "Stream connections, by how they started.", []string{"start"}, nil)
	streamMessages = prometheus.NewDesc("ledgerd_stream_messages_total", "Messages the live hub produced.", nil, nil)
)

func (c streamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{streamSubs, streamDropped, streamResumes, streamMessages} {
		ch <- d
	}
}

func (c streamCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(streamSubs, prometheus.GaugeValue, float64(st.Subscribers), "customer")
	ch <- prometheus.MustNewConstMetric(streamSubs, prometheus.GaugeValue, float64(st.Staff), "staff")
	ch <- prometheus.MustNewConstMetric(streamDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(streamResumes, prometheus.CounterValue, float64(st.Resumed), "resumed")
	ch <- prometheus.MustNewConstMetric(streamResumes, prometheus.CounterValue, float64(st.Snapshots), "snapshot")
	ch <- prometheus.MustNewConstMetric(streamMessages, prometheus.CounterValue, float64(st.Messages))
}
