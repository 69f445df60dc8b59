package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// Message headers. The envelope of each event travels in the body, since
// one message carries every event of a commit; the headers carry what a
// consumer needs to route or filter without decoding the body.
const (
	HeaderAggregateType = "Ledger-Aggregate-Type"
	HeaderAggregateID   = "Ledger-Aggregate-Id"
	HeaderEventTypes    = "Ledger-Event-Types" // comma separated, in order
	HeaderCommitID      = "Ledger-Commit-Id"
)

// JetStreamConfig configures the stream that holds every event.
type JetStreamConfig struct {
	Stream        string // default "LEDGER"
	SubjectPrefix string // default "ledger": subjects are <prefix>.<type>.<id>
	Replicas      int    // default 1; 3 on a cluster
	Storage       jetstream.StorageType
	// Duplicates is JetStream's dedup window for retried publishes. Our own
	// idempotency lives in the aggregates; this only covers a lost ack.
	Duplicates time.Duration
	// AttemptTimeout bounds one request to JetStream (a publish, one
	// batch of a load); AppendTimeout bounds a whole append with its
	// retries. Without them a cluster that has lost its quorum (connected,
	// but nobody answers) would hold a request for the client library's
	// default and then some: the API must answer 503 promptly instead.
	AttemptTimeout time.Duration
	AppendTimeout  time.Duration
}

func (c *JetStreamConfig) defaults() {
	if c.Stream == "" {
		c.Stream = "LEDGER"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "ledger"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = time.Second
	}
	if c.AppendTimeout == 0 {
		c.AppendTimeout = 3 * time.Second
	}
}

// JetStream is the Store over a NATS JetStream stream.
type JetStream struct {
	js  jetstream.JetStream
	cfg JetStreamConfig
}

var _ Store = (*JetStream)(nil)

// OpenJetStream creates or updates the stream and returns the store.
func OpenJetStream(ctx context.Context, js jetstream.JetStream, cfg JetStreamConfig) (*JetStream, error) {
	cfg.defaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "ledgerd event store: the source of truth",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // never drop history to make room
		Duplicates:  cfg.Duplicates,
		// History is immutable: no deletes, no purges.
		DenyDelete:         true,
		DenyPurge:          true,
		AllowDirect:        true, // batched direct gets load aggregates
		AllowAtomicPublish: true, // commits spanning aggregates
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: creating stream %s: %w", cfg.Stream, classify(err))
	}
	return &JetStream{js: js, cfg: cfg}, nil
}

// Subject is where an aggregate's commits are stored.
func (s *JetStream) Subject(ref Ref) string {
	return s.cfg.SubjectPrefix + "." + ref.Type + "." + ref.ID
}

// StreamName is the name of the underlying stream.
func (s *JetStream) StreamName() string { return s.cfg.Stream }

// SubjectPrefix is the prefix of every aggregate subject.
func (s *JetStream) SubjectPrefix() string { return s.cfg.SubjectPrefix }

// ParseSubject returns the aggregate a subject belongs to.
func (s *JetStream) ParseSubject(subject string) (Ref, bool) {
	rest, ok := strings.CutPrefix(subject, s.cfg.SubjectPrefix+".")
	if !ok {
		return Ref{}, false
	}
	typ, id, ok := strings.Cut(rest, ".")
	if !ok || typ == "" || id == "" {
		return Ref{}, false
	}
	return Ref{Type: typ, ID: id}, true
}

// loadBatch is how many messages one direct-get request returns. Its
// replies are read through a synchronous subscription, whose channel the
// connection sizes (natsembed sets 1024): keep it below that.
const loadBatch = 512

// Load reads the aggregate's commits after stream sequence after.
func (s *JetStream) Load(ctx context.Context, ref Ref, after uint64) ([]Commit, error) {
	if err := checkRef(ref); err != nil {
		return nil, err
	}
	var commits []Commit
	err := s.read(ctx, s.Subject(ref), after, func(msg *jetstream.RawStreamMsg) error {
		c, err := DecodeCommit(msg.Data, msg.Header, msg.Sequence, msg.Time, ref)
		if err != nil {
			return fmt.Errorf("at stream seq %d: %w", msg.Sequence, err)
		}
		commits = append(commits, c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: loading %s: %w", ref, err)
	}
	return commits, nil
}

// read calls fn with every message on subject (wildcards allowed) after
// stream sequence after, in stream order, through batched direct gets.
// Direct gets are answered by any replica, and a follower may not yet
// have applied what the leader acknowledged (for a while after a whole
// cluster restarts, seconds): on a replicated stream the leader names the
// subject's last sequence first, and the read goes on until it has reached
// it. So a load sees the command side's own writes, and an audit, an as-of
// balance or verify every event acknowledged before it began.
func (s *JetStream) read(ctx context.Context, subject string, after uint64, fn func(*jetstream.RawStreamMsg) error) error {
	var leaderLast uint64
	if s.cfg.Replicas > 1 {
		var err error
		if leaderLast, err = s.lastSeqOnLeader(ctx, subject); err != nil {
			return err
		}
	}
	lagging := time.Time{}
	for {
		msgs, err := s.getBatch(ctx, subject, after)
		if err != nil {
			return err
		}
		more := false
		for msg, err := range msgs {
			if errors.Is(err, jetstreamext.ErrNoMessages) {
				break
			}
			if err != nil {
				return classify(err)
			}
			if err := fn(msg); err != nil {
				return err
			}
			after = msg.Sequence
			more = msg.Header.Get("Nats-Num-Pending") != "0"
		}
		if !more && after >= leaderLast {
			return nil
		}
		if !more {
			// A lagging replica answered: ask again shortly (another
			// replica may answer), for a bounded time.
			if lagging.IsZero() {
				lagging = time.Now()
			} else if time.Since(lagging) > laggingBound {
				return fmt.Errorf("%w: replicas behind the leader (at %d of %d) for %v", ErrUnavailable, after, leaderLast, laggingBound)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: replica behind the leader: %v", ErrUnavailable, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// laggingBound is how long a read waits for the replicas answering direct
// gets to catch up with the leader before it gives up (503).
const laggingBound = 10 * time.Second

// lastSeqOnLeader asks the stream's leader (the non-direct get API, which
// only the leader answers) for the subject's last stream sequence; 0 when
// the subject has no message.
func (s *JetStream) lastSeqOnLeader(ctx context.Context, subject string) (uint64, error) {
	seq, _, err := s.lastOnLeader(ctx, subject)
	return seq, err
}

// lastOnLeader is the subject's last message as the leader has it: its
// sequence and body (0 and nil when there is none).
func (s *JetStream) lastOnLeader(ctx context.Context, subject string) (uint64, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	resp, err := s.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.cfg.Stream, req)
	if err != nil {
		return 0, nil, classify(err)
	}
	var r struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	// A cluster in transition answers with a bare status (no JetStream
	// responder, 503) or nothing usable: that is "not now", never a 500.
	if len(resp.Data) == 0 {
		return 0, nil, fmt.Errorf("last message of %s: %w: empty reply (status %q)", subject, ErrUnavailable, resp.Header.Get("Status"))
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, nil, fmt.Errorf("last message of %s: %w: unreadable reply: %v", subject, ErrUnavailable, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, nil, nil
	case r.Error != nil:
		return 0, nil, classify(r.Error)
	case r.Message == nil:
		return 0, nil, fmt.Errorf("last message of %s: %w: empty answer", subject, ErrUnavailable)
	}
	return r.Message.Seq, r.Message.Data, nil
}

// getBatch is one bounded direct-get request, tried again briefly when
// nobody answers: a replicated stream's replicas stop serving direct gets
// while it elects a leader or a node catches up.
func (s *JetStream) getBatch(ctx context.Context, subject string, after uint64) (iter.Seq2[*jetstream.RawStreamMsg, error], error) {
	var err error
	for attempt := range publishAttempts {
		bctx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		var msgs iter.Seq2[*jetstream.RawStreamMsg, error]
		msgs, err = jetstreamext.GetBatch(bctx, s.js, s.cfg.Stream, loadBatch,
			jetstreamext.GetBatchSeq(after+1), jetstreamext.GetBatchSubject(subject))
		if err == nil {
			// The iterator reads replies under bctx: cancel when done.
			return func(yield func(*jetstream.RawStreamMsg, error) bool) {
				defer cancel()
				msgs(yield)
			}, nil
		}
		cancel()
		err = classify(err)
		if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return nil, err
}

// Append stores the commits atomically, each only if its aggregate is
// still at the expected stream sequence.
func (s *JetStream) Append(ctx context.Context, appends ...Append) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AppendTimeout)
	defer cancel()
	switch len(appends) {
	case 0:
		return nil, nil
	case 1:
		seq, err := s.appendOne(ctx, appends[0])
		if err != nil {
			return nil, err
		}
		return []uint64{seq}, nil
	default:
		return s.appendAtomic(ctx, appends)
	}
}

// publishAttempts bounds retries of a publish whose outcome was not
// acknowledged (timeout, reconnect): the same message is sent again, and a
// conflict on a retry is checked against the aggregate's head to tell "we
// already stored it" from "someone else wrote".
const publishAttempts = 3

func (s *JetStream) appendOne(ctx context.Context, a Append) (uint64, error) {
	msg, err := s.encode(a.Commit)
	if err != nil {
		return 0, err
	}
	msg.Header.Set(nats.MsgIdHdr, a.Commit.ID)
	var lastErr error
	for attempt := 0; attempt < publishAttempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		seq, err := s.publish(actx, msg, a.Expected)
		cancel()
		if err == nil {
			return seq, nil
		}
		if subjectBusy(err) {
			// A replicated stream refuses an expected-sequence publish
			// while an earlier one on the same subject is still being
			// applied, even one already acknowledged to us (10164). Nothing
			// was stored and nothing is known about the expected sequence:
			// send the same message again shortly, within the append's
			// bound, without spending an attempt.
			attempt--
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("eventstore: appending to %s: %w: %v", a.Commit.Aggregate, ErrUnavailable, ctx.Err())
			case <-time.After(time.Millisecond):
			}
			continue
		}
		err = classify(err)
		if errors.Is(err, ErrConflict) {
			// JetStream checks the expected sequence before its dedup
			// window, so a retry of a stored commit reports a conflict;
			// so does a first attempt racing its own earlier, unacked
			// publish. Either way the head tells.
			if seq, ok := s.headIs(ctx, a.Commit.Aggregate, a.Commit.ID); ok {
				return seq, nil
			}
			return 0, err
		}
		lastErr = err
		if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("eventstore: appending to %s: %w", a.Commit.Aggregate, lastErr)
}

// publish is jetstream's PublishMsg for the one publish the store makes
// (expected stream, expected last sequence on the subject), reading the
// ack with goccy/go-json: encoding/json reading the two acks of every
// charged call was 2 % of the charged-calls benchmark's CPU. It behaves as
// PublishMsg does: "no responders" (a stream without a leader for a
// moment) is retried DefaultPubRetryAttempts times DefaultPubRetryWait
// apart, then reported as jetstream.ErrNoStreamResponse; an error in the
// ack comes back as a *jetstream.APIError; an ack without a stream is
// jetstream.ErrInvalidJSAck.
func (s *JetStream) publish(ctx context.Context, msg *nats.Msg, expected uint64) (uint64, error) {
	msg.Header.Set(jetstream.ExpectedStreamHeader, s.cfg.Stream)
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expected, 10))
	var resp *nats.Msg
	err := whileNoResponders(ctx, func() (err error) {
		resp, err = s.js.Conn().RequestMsgWithContext(ctx, msg)
		return err
	})
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, jetstream.ErrNoStreamResponse
	}
	if err != nil {
		return 0, err
	}
	var ack struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if err := gojson.Unmarshal(resp.Data, &ack); err != nil {
		return 0, jetstream.ErrInvalidJSAck
	}
	if ack.Error != nil {
		return 0, fmt.Errorf("nats: %w", ack.Error)
	}
	if ack.Stream == "" {
		return 0, jetstream.ErrInvalidJSAck
	}
	return ack.Seq, nil
}

// whileNoResponders runs op, and again while it meets "no responders" (a
// stream without a leader for a moment: just created, or electing one),
// DefaultPubRetryAttempts more times DefaultPubRetryWait apart, as
// jetstream's PublishMsg does. It returns op's last error, or ctx's.
func whileNoResponders(ctx context.Context, op func() error) error {
	err := op()
	for r := 0; errors.Is(err, nats.ErrNoResponders) && r < jetstream.DefaultPubRetryAttempts; r++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jetstream.DefaultPubRetryWait):
		}
		err = op()
	}
	return err
}

// headIs reports whether the aggregate's last stored commit is commitID.
func (s *JetStream) headIs(ctx context.Context, ref Ref, commitID string) (uint64, bool) {
	if s.cfg.Replicas > 1 {
		// Only the leader is sure to have our own latest commit.
		seq, data, err := s.lastOnLeader(ctx, s.Subject(ref))
		var c struct {
			ID string `json:"id"`
		}
		if err != nil || data == nil || json.Unmarshal(data, &c) != nil || c.ID != commitID {
			return 0, false
		}
		return seq, true
	}
	stream, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return 0, false
	}
	m, err := stream.GetLastMsgForSubject(ctx, s.Subject(ref))
	if err != nil {
		return 0, false
	}
	var c struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(m.Data, &c) != nil || c.ID != commitID {
		return 0, false
	}
	return m.Sequence, true
}

func (s *JetStream) appendAtomic(ctx context.Context, appends []Append) ([]uint64, error) {
	// A batch is stored only with its last message: one a message of which
	// met "no responders" was not, and is sent again as a new batch.
	var seqs []uint64
	err := whileNoResponders(ctx, func() (err error) {
		seqs, err = s.tryAtomic(ctx, appends)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore: atomic append of %d commits: %w", len(appends), classify(err))
	}
	return seqs, nil
}

// tryAtomic sends the appends as one atomic batch.
func (s *JetStream) tryAtomic(ctx context.Context, appends []Append) ([]uint64, error) {
	batch, err := jetstreamext.NewBatchPublisher(s.js)
	if err != nil {
		return nil, err
	}
	for i, a := range appends {
		msg, err := s.encode(a.Commit)
		if err != nil {
			_ = batch.Discard()
			return nil, err
		}
		// Atomic batches refuse Nats-Msg-Id; the expected sequences give
		// the same protection against a double write.
		opts := []jetstreamext.BatchMsgOpt{
			jetstreamext.WithBatchExpectStream(s.cfg.Stream),
			jetstreamext.WithBatchExpectLastSequencePerSubject(a.Expected),
		}
		if i < len(appends)-1 {
			err = batch.AddMsg(msg, opts...)
		} else {
			var ack *jetstreamext.BatchAck
			ack, err = batch.CommitMsg(ctx, msg, opts...)
			if err == nil {
				// The batch's messages are contiguous in the stream and
				// the ack names the last one.
				seqs := make([]uint64, len(appends))
				for j := range seqs {
					seqs[j] = ack.Sequence - uint64(len(appends)-1-j)
				}
				return seqs, nil
			}
		}
		if err != nil {
			_ = batch.Discard()
			return nil, err
		}
	}
	panic("unreachable")
}

func (s *JetStream) encode(c Commit) (*nats.Msg, error) {
	if err := checkRef(c.Aggregate); err != nil {
		return nil, err
	}
	if c.ID == "" || len(c.Events) == 0 {
		return nil, fmt.Errorf("eventstore: commit to %s needs an id and events", c.Aggregate)
	}
	types := make([]string, len(c.Events))
	for i, e := range c.Events {
		if e.AggregateType != c.Aggregate.Type || e.AggregateID != c.Aggregate.ID {
			return nil, fmt.Errorf("eventstore: event %s belongs to %s/%s, not %s", e.ID, e.AggregateType, e.AggregateID, c.Aggregate)
		}
		types[i] = e.Type
	}
	body := encodeCommit(&c)
	msg := nats.NewMsg(s.Subject(c.Aggregate))
	msg.Data = body
	msg.Header.Set(HeaderAggregateType, c.Aggregate.Type)
	msg.Header.Set(HeaderAggregateID, c.Aggregate.ID)
	msg.Header.Set(HeaderEventTypes, strings.Join(types, ","))
	msg.Header.Set(HeaderCommitID, c.ID)
	return msg, nil
}

// DecodeCommit reads a stored message back into a commit. ref may be zero,
// in which case it is taken from the headers.
func DecodeCommit(data []byte, hdr nats.Header, streamSeq uint64, stored time.Time, ref Ref) (Commit, error) {
	var c Commit
	// goccy/go-json reads a commit about seven times faster than
	// encoding/json (which validates the whole body, then each event's
	// data again); FuzzDecodeCommitMatchesEncodingJSON holds the two to
	// the same results.
	if err := gojson.Unmarshal(data, &c); err != nil {
		return Commit{}, fmt.Errorf("decoding commit: %w", err)
	}
	if ref == (Ref{}) {
		ref = Ref{Type: hdr.Get(HeaderAggregateType), ID: hdr.Get(HeaderAggregateID)}
	}
	c.Aggregate = ref
	c.StreamSeq = streamSeq
	c.Stored = stored
	for i := range c.Events {
		c.Events[i].StreamSeq = streamSeq
	}
	return c, nil
}

func checkRef(r Ref) error {
	for _, part := range []string{r.Type, r.ID} {
		if part == "" || strings.ContainsAny(part, ".*> \t\r\n") {
			return fmt.Errorf("eventstore: invalid aggregate reference %q", r.String())
		}
	}
	return nil
}

// subjectBusy reports JetStream's 10164 ("wrong last sequence" without a
// sequence): on a replicated stream it means another expected-sequence
// publish on the subject is in flight, not that ours is stale.
func subjectBusy(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// classify maps JetStream errors onto the store's sentinels, by error code
// and never by message text.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return fmt.Errorf("%w (%s)", ErrConflict, apiErr.Description)
		}
		// 503 (no quorum, no leader) and 10008 ("JetStream system
		// temporarily unavailable", whatever code it comes with) say the
		// cluster cannot answer now: the caller gets 503, never 500.
		// 10158: a retry found its own earlier publish still being
		// processed (a stream without quorum holds it); its outcome is
		// not known yet, like a timeout's.
		if apiErr.Code == 503 || apiErr.ErrorCode == 10008 || apiErr.ErrorCode == 10158 {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	}
	switch {
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// Messages returns how many messages the stream holds (for tests and
// status pages).
func (s *JetStream) Messages(ctx context.Context) (uint64, error) {
	st, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return 0, classify(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, classify(err)
	}
	return info.State.Msgs, nil
}

// LoadType returns every commit of every aggregate of one type, in stream
// order. It is for small aggregate types read whole at start (the price
// list), not for accounts.
func (s *JetStream) LoadType(ctx context.Context, typ string) ([]Commit, error) {
	var commits []Commit
	err := s.Scan(ctx, typ, "", 0, func(c Commit) error {
		commits = append(commits, c)
		return nil
	})
	return commits, err
}

// Scan calls fn with every commit after stream sequence after, in stream
// order, for aggregates of type typ ("" for all) and id ("" for all),
// without holding them all in memory.
func (s *JetStream) Scan(ctx context.Context, typ, id string, after uint64, fn func(Commit) error) error {
	subject := s.cfg.SubjectPrefix + ".>"
	switch {
	case typ != "" && id != "":
		subject = s.Subject(Ref{Type: typ, ID: id})
	case typ != "":
		subject = s.cfg.SubjectPrefix + "." + typ + ".>"
	}
	err := s.read(ctx, subject, after, func(msg *jetstream.RawStreamMsg) error {
		ref, _ := s.ParseSubject(msg.Subject)
		c, err := DecodeCommit(msg.Data, msg.Header, msg.Sequence, msg.Time, ref)
		if err != nil {
			return fmt.Errorf("at %d: %w", msg.Sequence, err)
		}
		return fn(c)
	})
	if err != nil {
		return fmt.Errorf("eventstore: scanning %s: %w", subject, err)
	}
	return nil
}

// Head is the stream's last sequence.
func (s *JetStream) Head(ctx context.Context) (uint64, error) {
	st, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return 0, classify(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, classify(err)
	}
	return info.State.LastSeq, nil
}
