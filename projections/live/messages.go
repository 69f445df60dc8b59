package live

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"
)

// Message is one event of a stream. Messages are shared by every
// subscriber that gets them; the JSON is encoded once, on first use.
type Message struct {
	ID        uint64
	Type      string
	AccountID string // empty for lag and platform messages
	// pos is the position of the projection batch the message came from.
	pos  uint64
	data any

	once sync.Once
	enc  []byte
}

// JSON is the message's data object.
func (m *Message) JSON() []byte {
	m.once.Do(func() {
		b, err := json.Marshal(m.data)
		if err != nil {
			// Every data type here is plain; this cannot happen.
			b = []byte(`{}`)
		}
		m.enc = b
	})
	return m.enc
}

// SSE is the message in Server-Sent Events framing.
func (m *Message) SSE() []byte {
	data := m.JSON()
	b := make([]byte, 0, len(data)+len(m.Type)+40)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, m.ID, 10)
	b = append(b, "\nevent: "...)
	b = append(b, m.Type...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// Frame is the message as one WebSocket text message:
// {"id":"N","type":"T","data":{...}}.
func (m *Message) Frame() []byte {
	data := m.JSON()
	b := make([]byte, 0, len(data)+len(m.Type)+40)
	b = append(b, `{"id":"`...)
	b = strconv.AppendUint(b, m.ID, 10)
	b = append(b, `","type":`...)
	b = strconv.AppendQuote(b, m.Type)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// Message data, as the stream schema in the README fixes it. Money is a
// decimal string with two places; times are RFC 3339 UTC.

type money decimal.Decimal

func (m money) MarshalJSON() ([]byte, error) {
	return []byte(`"` + decimal.Decimal(m).StringFixed(2) + `"`), nil
}

type countSpend struct {
	Calls int64 `json:"calls"`
	Spend money `json:"spend"`
}

type walletData struct {
	AccountID string `json:"account_id"`
	Balance   money  `json:"balance"`
	Held      money  `json:"held"`
	Available money  `json:"available"`
	Credits   money  `json:"credits"`
}

// walletBody is a wallet as GET /api/v1/wallet renders it: balance is
// paid money, credits unexpired grants, held both kinds reserved, and
// available = balance + credits - held.
type walletBody struct {
	Balance   money `json:"balance"`
	Held      money `json:"held"`
	Available money `json:"available"`
	Credits   money `json:"credits"`
}

func renderWallet(paid, held, credits, heldCredits decimal.Decimal) walletBody {
	return walletBody{Balance: money(paid.Add(held)), Held: money(held.Add(heldCredits)),
		Available: money(paid.Add(credits)), Credits: money(credits.Add(heldCredits))}
}

type lagData struct {
	Events uint64 `json:"events"`
	MS     int64  `json:"ms"`
}

type snapshotData struct {
	AccountID string     `json:"account_id"`
	Currency  string     `json:"currency"`
	Wallet    walletBody `json:"wallet"`
	Today     countSpend `json:"today"`
	Month     countSpend `json:"month"`
	Lag       lagData    `json:"lag"`
}

type usageData struct {
	AccountID string     `json:"account_id"`
	Model     string     `json:"model"`
	KeyID     *string    `json:"key_id"`
	Bucket    string     `json:"bucket"`
	Calls     int64      `json:"calls"`
	Spend     money      `json:"spend"`
	Failures  int64      `json:"failures"`
	Today     countSpend `json:"today"`
	Month     countSpend `json:"month"`
}

type taskData struct {
	AccountID   string  `json:"account_id"`
	TaskID      string  `json:"task_id"`
	Model       string  `json:"model"`
	KeyID       *string `json:"key_id"`
	Status      string  `json:"status"`
	Cost        money   `json:"cost"`
	CreatedAt   string  `json:"created_at"`
	CompletedAt *string `json:"completed_at"`
}

// planData says an account's plan or subscription changed: event is
// subscribed, renewed, lapsed (the renewal could not be paid; a changed
// message to free follows) or changed.
type planData struct {
	AccountID string  `json:"account_id"`
	Plan      string  `json:"plan"`
	Previous  string  `json:"previous,omitempty"`
	Event     string  `json:"event"`
	Fee       *money  `json:"fee,omitempty"`
	PeriodEnd *string `json:"period_end,omitempty"`
	Reason    string  `json:"reason,omitempty"`
}

type keyData struct {
	AccountID string `json:"account_id"`
	KeyID     string `json:"key_id"`
	Action    string `json:"action"`
}

type topAccount struct {
	AccountID  string `json:"account_id"`
	Email      string `json:"email"`
	CallsToday int64  `json:"calls_today"`
	SpendToday money  `json:"spend_today"`
}

type projectionData struct {
	Name      string `json:"name"`
	Position  uint64 `json:"position"`
	LagEvents uint64 `json:"lag_events"`
	LagMS     int64  `json:"lag_ms"`
	Status    string `json:"status"`
}

type providerData struct {
	Provider string `json:"provider"`
	State    string `json:"state"`
}

type platformData struct {
	CallsPerSecond float64          `json:"calls_per_second"`
	CallsToday     int64            `json:"calls_today"`
	RevenueToday   money            `json:"revenue_today"`
	HeldTotal      money            `json:"held_total"`
	TopAccounts    []topAccount     `json:"top_accounts"`
	Projections    []projectionData `json:"projections"`
	Providers      []providerData   `json:"providers"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
