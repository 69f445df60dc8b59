package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/domain/validation"
)

// body is the JSON body of one write route. decode fills its exported
// fields; check validates them without any I/O and keeps what it parsed in
// the unexported ones. Handlers and FuzzDecodeBodies share this one path
// from bytes to a command's input, so what the fuzzer proves of it holds
// for the server.
type body interface {
	check() error
}

// decodeBody decodes r's body into b and checks it.
func decodeBody(r *http.Request, b body) error {
	if err := decode(r, b); err != nil {
		return err
	}
	return b.check()
}

// credentialsBody: POST /api/auth/login, which needs both present.
type credentialsBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (b *credentialsBody) check() error {
	var verr validation.Error
	required("email", b.Email, &verr)
	if b.Password == "" {
		verr.Add("password", "is required")
	}
	return verr.Err()
}

// signupBody: POST /api/auth/signup; the rules for the email and the
// password are the domain's (CreateAccount).
type signupBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (b *signupBody) check() error {
	var verr validation.Error
	required("email", b.Email, &verr)
	required("password", b.Password, &verr)
	return verr.Err()
}

// createAccountBody: POST /api/admin/accounts.
type createAccountBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Plan     string `json:"plan"`

	plan account.Plan
}

func (b *createAccountBody) check() error {
	var verr validation.Error
	required("email", b.Email, &verr)
	required("password", b.Password, &verr)
	b.plan = account.PlanStandard
	if b.Plan != "" {
		var ok bool
		if b.plan, ok = account.ParsePlan(b.Plan); !ok {
			verr.Add("plan", "must be one of free, standard, pro, api")
		}
	}
	return verr.Err()
}

// updateAccountBody: PATCH /api/admin/accounts/{id}.
type updateAccountBody struct {
	Plan   *string `json:"plan"`
	Status *string `json:"status"`

	plan   *account.Plan
	status *account.Status
}

func (b *updateAccountBody) check() error {
	var verr validation.Error
	if b.Plan != nil {
		pl, ok := account.ParsePlan(*b.Plan)
		if !ok {
			verr.Add("plan", "must be one of free, standard, pro, api")
		}
		b.plan = &pl
	}
	if b.Status != nil {
		st, ok := account.ParseStatus(*b.Status)
		if !ok {
			verr.Add("status", "must be one of active, suspended, closed")
		}
		b.status = &st
	}
	if b.plan == nil && b.status == nil {
		verr.Add("body", "give plan and/or status")
	}
	return verr.Err()
}

// topUpBody: POST /api/admin/accounts/{id}/topups. The minimum and the
// reference's rules are the account aggregate's.
type topUpBody struct {
	Amount    json.RawMessage `json:"amount"`
	Reference string          `json:"reference"`

	amount money.Amount
}

func (b *topUpBody) check() error {
	var verr validation.Error
	b.amount = amount("amount", b.Amount, &verr)
	required("reference", b.Reference, &verr)
	return verr.Err()
}

// staffBody: POST /api/admin/users.
type staffBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Role     string `json:"role"`

	role user.Role
}

func (b *staffBody) check() error {
	var verr validation.Error
	required("email", b.Email, &verr)
	required("password", b.Password, &verr)
	role, ok := user.ParseStaffRole(b.Role)
	if !ok {
		verr.Add("role", "must be admin or finance")
	}
	b.role = role
	return verr.Err()
}

// createKeyBody: POST /api/users/me/api-keys. The key's rules (name,
// scopes, quota, allowlist, expiry, rate) are apikey.NewSpec's, applied by
// the command with the clock and the plan's default rate.
type createKeyBody struct {
	Name         string   `json:"name"`
	Scopes       []string `json:"scopes"`
	MonthlyQuota *struct {
		Calls *int64          `json:"calls"`
		Spend json.RawMessage `json:"spend"`
	} `json:"monthly_quota"`
	IPAllowlist []string `json:"ip_allowlist"`
	ExpiresAt   *string  `json:"expires_at"`
	RateLimit   *int     `json:"rate_limit_per_minute"`

	spec apikey.SpecInput
}

func (b *createKeyBody) check() error {
	b.spec = apikey.SpecInput{Name: b.Name, Scopes: b.Scopes, Allowlist: b.IPAllowlist, RateLimit: b.RateLimit}
	var verr validation.Error
	if q := b.MonthlyQuota; q != nil {
		if q.Calls != nil {
			b.spec.Quota.Calls = *q.Calls
		}
		if len(q.Spend) > 0 && string(q.Spend) != "null" {
			a := amount("monthly_quota.spend", q.Spend, &verr)
			b.spec.Quota.Spend = &a
		}
	}
	if b.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339, *b.ExpiresAt)
		if err != nil {
			verr.Add("expires_at", "must be an RFC 3339 time such as 2027-01-01T00:00:00Z")
		} else {
			b.spec.ExpiresAt = &t
		}
	}
	return verr.Err()
}

// imageBody: POST /api/v1/image/generate. The model, and the size against
// its options, are checked by the handler against the price list.
type imageBody struct {
	Prompt string `json:"prompt"`
	Model  string `json:"model"`
	Size   string `json:"size"`
}

func (b *imageBody) check() error {
	var verr validation.Error
	checkPrompt(b.Prompt, &verr)
	checkText("size", b.Size, 100, &verr)
	return verr.Err()
}

// videoBody: POST /api/v1/video/generate.
type videoBody struct {
	Prompt     string          `json:"prompt"`
	Model      string          `json:"model"`
	Duration   json.RawMessage `json:"duration"`
	Resolution string          `json:"resolution"`

	duration int
}

func (b *videoBody) check() error {
	var verr validation.Error
	checkPrompt(b.Prompt, &verr)
	b.duration = seconds("duration", json.Number(strings.TrimSpace(string(b.Duration))), &verr)
	checkText("resolution", b.Resolution, 100, &verr)
	return verr.Err()
}

// taskBody: POST /api/v1/generateTask/{model}.
type taskBody struct {
	RequestType string         `json:"request_type"`
	Input       map[string]any `json:"input"`
	CallbackURL string         `json:"callback_url"`

	input account.TaskInput
	async bool
}

func (b *taskBody) check() error {
	var verr validation.Error
	rt := b.RequestType
	if rt == "" {
		rt = "async"
	}
	if rt != "async" && rt != "sync" {
		verr.Add("request_type", "must be async or sync")
	}
	checkCallback(b.CallbackURL, &verr)
	b.input = account.TaskInput{RequestType: rt, CallbackURL: b.CallbackURL}
	if b.Input == nil {
		verr.Add("input", "is required")
	} else {
		b.input = taskInput(b.Input, b.input, &verr)
	}
	b.async = rt == "async"
	return verr.Err()
}

// modelBody: PUT /api/admin/models/{model}. The name comes from the path
// and the currency must be the server's: the handler checks both, and the
// definition as a whole is pricing.Model.Check's.
type modelBody struct {
	Type          string          `json:"type"`
	Price         json.RawMessage `json:"price"`
	Currency      string          `json:"currency"`
	Provider      string          `json:"provider"`
	ProviderModel string          `json:"provider_model"`
	Options       pricing.Options `json:"options"`

	price money.Amount
}

func (b *modelBody) check() error {
	var verr validation.Error
	b.price = amount("price", b.Price, &verr)
	checkText("provider_model", b.ProviderModel, 200, &verr)
	for i, s := range b.Options.Sizes {
		checkText("options.sizes["+itoa(i)+"]", s, 100, &verr)
	}
	for i, s := range b.Options.Resolutions {
		checkText("options.resolutions["+itoa(i)+"]", s, 100, &verr)
	}
	for i, s := range b.Options.Passthrough {
		checkText("options.passthrough["+itoa(i)+"]", s, 100, &verr)
	}
	return verr.Err()
}

// adjustBody: POST /api/admin/accounts/{id}/adjustments.
type adjustBody struct {
	Amount json.RawMessage `json:"amount"`
	Reason string          `json:"reason"`

	amount money.Amount
}

func (b *adjustBody) check() error {
	var verr validation.Error
	b.amount = amount("amount", b.Amount, &verr)
	required("reason", b.Reason, &verr)
	return verr.Err()
}

// grantBody: POST /api/admin/accounts/{id}/grants.
type grantBody struct {
	Amount    json.RawMessage `json:"amount"`
	ExpiresAt string          `json:"expires_at"`
	Reason    string          `json:"reason"`

	amount  money.Amount
	expires time.Time
}

func (b *grantBody) check() error {
	var verr validation.Error
	b.amount = amount("amount", b.Amount, &verr)
	if strings.TrimSpace(b.ExpiresAt) == "" {
		verr.Add("expires_at", "is required")
	} else if t, err := time.Parse(time.RFC3339, b.ExpiresAt); err != nil {
		verr.Add("expires_at", "must be an RFC 3339 time such as 2027-01-01T00:00:00Z")
	} else {
		b.expires = t
	}
	required("reason", b.Reason, &verr)
	return verr.Err()
}

// planBody: PUT /api/admin/plans/{plan}. Fields left out are the free
// defaults; the definition as a whole is plan.Plan.Check's.
type planBody struct {
	APIAccess        *bool           `json:"api_access"`
	MonthlyFee       json.RawMessage `json:"monthly_fee"`
	IncludedCredits  json.RawMessage `json:"included_credits"`
	MaxKeys          *int            `json:"max_keys"`
	DefaultRateLimit *int            `json:"default_rate_limit"`

	def plan.Plan // without name and currency
}

func (b *planBody) check() error {
	var verr validation.Error
	b.def = plan.Plan{}
	if b.APIAccess == nil {
		verr.Add("api_access", "is required (true or false)")
	} else {
		b.def.APIAccess = *b.APIAccess
	}
	if len(b.MonthlyFee) > 0 {
		b.def.MonthlyFee = amount("monthly_fee", b.MonthlyFee, &verr)
	}
	if len(b.IncludedCredits) > 0 {
		b.def.IncludedCredits = amount("included_credits", b.IncludedCredits, &verr)
	}
	if b.MaxKeys != nil {
		b.def.MaxKeys = *b.MaxKeys
	}
	if b.DefaultRateLimit != nil {
		b.def.DefaultRateLimit = *b.DefaultRateLimit
	}
	return verr.Err()
}

// subscribeBody: POST /api/v1/subscription.
type subscribeBody struct {
	Plan string `json:"plan"`
}

func (b *subscribeBody) check() error {
	if b.Plan == "" {
		return validation.Field("plan", "is required")
	}
	if !plan.ValidName(b.Plan) {
		return validation.Field("plan", fmt.Sprintf("%q is not a defined plan (GET /api/v1/plans)", b.Plan))
	}
	return nil
}

// checkoutBody: POST /api/v1/wallet/checkout.
type checkoutBody struct {
	Amount json.RawMessage `json:"amount"`

	amount money.Amount
}

func (b *checkoutBody) check() error {
	var verr validation.Error
	b.amount = amount("amount", b.Amount, &verr)
	if len(verr.Fields) == 0 && b.amount.Cmp(account.MinTopUp) < 0 {
		verr.Add("amount", "must be at least "+account.MinTopUp.String())
	}
	return verr.Err()
}

// notificationsBody: PUT /api/v1/notifications.
type notificationsBody struct {
	Threshold  json.RawMessage `json:"low_balance_threshold"`
	WebhookURL *string         `json:"webhook_url"`

	threshold *money.Amount
	url       string
}

func (b *notificationsBody) check() error {
	var verr validation.Error
	b.threshold, b.url = nil, ""
	if len(b.Threshold) == 0 {
		verr.Add("low_balance_threshold", "is required (null turns the alert off)")
	} else if !bytes.Equal(bytes.TrimSpace(b.Threshold), []byte("null")) {
		t := amount("low_balance_threshold", b.Threshold, &verr)
		if t.IsNegative() {
			verr.Add("low_balance_threshold", "must not be negative")
		}
		b.threshold = &t
	}
	if b.WebhookURL != nil {
		b.url = *b.WebhookURL
	}
	if b.threshold != nil && b.url == "" {
		verr.Add("webhook_url", "is required with a threshold")
	}
	checkURL("webhook_url", b.url, &verr)
	return verr.Err()
}
