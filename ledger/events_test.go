package ledger

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/apikey"
	"github.com/ledgerd/ledgerd/domain/journal"
	"github.com/ledgerd/ledgerd/domain/money"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger/codec"
)

var update = flag.Bool("update", false, "rewrite golden files")

// samples holds one value of every event type at its current version.
// Their golden files are the stored format: a change to a struct that
// alters them breaks every replay and must come with a new version and an
// upcaster instead.
var accountSamples = []account.Event{
	account.Opened{AccountID: "acc_01", Email: "a@example.com", OwnerUserID: "usr_01", Plan: account.PlanStandard, Currency: money.USD},
	account.PlanChanged{Plan: account.PlanPro, Previous: account.PlanStandard},
	account.StatusChanged{Status: account.StatusSuspended, Previous: account.StatusActive},
	account.ToppedUp{TopUpID: "top_01", Amount: money.MustParse("25.00"), Reference: "inv-1",
		Transaction: journal.Move(journal.PlatformCash, journal.Available("acc_01"), money.MustParse("25.00"))},
	account.KeyCreated{KeyID: "key_01", Name: "ci", Hash: apikey.HashOf("nx_live_example"), Prefix: "nx_live_", Last4: "mple",
		Scopes: apikey.DefaultScopes, Quota: apikey.Quota{Calls: 1000, Spend: ptr(money.MustParse("50.00"))},
		Allowlist: []string{"203.0.113.0/24"}, ExpiresAt: ptr(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)), RateLimit: 600},
	account.KeyRotated{KeyID: "key_01", Hash: apikey.HashOf("nx_live_new"), Last4: "_new", PreviousHash: apikey.HashOf("nx_live_example")},
	account.KeyRevoked{KeyID: "key_01", Hash: apikey.HashOf("nx_live_new")},
	account.Adjusted{AdjustmentID: "adj_01", Amount: money.MustParse("-5.00"), Reason: "duplicate top-up",
		Transaction: journal.Move(journal.Available("acc_01"), journal.PlatformAdjustments, money.MustParse("5.00"))},
	account.TaskRequested{TaskID: "gen_01", KeyID: "key_01", Model: "nano-banana-2", Type: pricing.TypeImage,
		Price: money.MustParse("0.80"), Currency: money.USD, Provider: "local", ProviderModel: "nano-banana-2",
		Input:          account.TaskInput{Prompt: "A cat", Size: "1024x1024", RequestType: "sync", CallbackURL: "https://example.com/cb", Extra: map[string]any{"seed": 7.0}},
		IdempotencyKey: "idem-1", RequestHash: "abcd", Owner: "inst_01",
		RequestedAt: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), HoldExpiresAt: time.Date(2026, 11, 23, 12, 5, 0, 0, time.UTC),
		Transaction: journal.Move(journal.Available("acc_01"), journal.Held("acc_01"), money.MustParse("0.80"))},
	account.TaskStarted{TaskID: "gen_01", ProviderRef: "local_abc"},
	account.TaskAdopted{TaskID: "gen_01", From: "inst_01", To: "inst_02"},
	account.TaskSucceeded{TaskID: "gen_01", Output: account.TaskOutput{ImageURL: "http://h/files/a.png", URLs: []string{"http://h/files/a.png"}, EnhancedPrompt: "A cat."},
		Amount: money.MustParse("0.80"), Transaction: journal.Move(journal.Held("acc_01"), journal.PlatformRevenue, money.MustParse("0.80"))},
	account.TaskFailed{TaskID: "gen_02", Code: "provider_error", Reason: "boom", Amount: money.MustParse("2.50"),
		Transaction: journal.Move(journal.Held("acc_01"), journal.Available("acc_01"), money.MustParse("2.50"))},
	account.CallbackAttempted{TaskID: "gen_01", Attempt: 2, Status: 500, Error: "server error", NextAttemptAt: ptr(time.Date(2026, 11, 23, 12, 1, 0, 0, time.UTC))},
	account.CreditsGranted{GrantID: "grt_01", Amount: money.MustParse("5.00"), ExpiresAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		Reason: "welcome", Source: "admin", Transaction: journal.Move(journal.PlatformPromotions, journal.Credits("acc_01"), money.MustParse("5.00"))},
	account.GrantExpired{GrantID: "grt_01", Amount: money.MustParse("1.20"), ExpiresAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		Transaction: journal.Move(journal.Credits("acc_01"), journal.PlatformPromotions, money.MustParse("1.20"))},
	account.Subscribed{Plan: account.PlanPro, Fee: money.MustParse("20.00"), PeriodStart: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
		PeriodEnd: time.Date(2026, 12, 23, 12, 0, 0, 0, time.UTC), Renewal: true,
		Transaction: journal.Move(journal.Available("acc_01"), journal.PlatformRevenue, money.MustParse("20.00"))},
	account.SubscriptionLapsed{Plan: account.PlanPro, Fee: money.MustParse("20.00"), PeriodEnd: time.Date(2026, 12, 23, 12, 0, 0, 0, time.UTC),
		Reason: "the monthly fee of 20.00 is more than the available paid balance"},
	account.Refunded{RefundID: "rfd_01", TopUpID: "top_01", Reference: "cs_test_1", ChargeID: "ch_1", Amount: money.MustParse("25.00"),
		RefundedTotal: money.MustParse("25.00"), Covered: money.MustParse("20.00"), Owed: money.MustParse("5.00"),
		Transaction: journal.Transaction{{Account: journal.PlatformCash, Credit: money.MustParse("25.00")},
			{Account: journal.Available("acc_01"), Debit: money.MustParse("20.00")}, {Account: journal.Receivable("acc_01"), Debit: money.MustParse("5.00")}}},
	account.NotificationsSet{LowBalanceThreshold: ptr(money.MustParse("5.00")), WebhookURL: "https://example.com/alerts", Armed: true},
	account.LowBalanceCrossed{AlertID: "lba_01", Threshold: money.MustParse("5.00"), Available: money.MustParse("4.20"), Currency: money.USD, WebhookURL: "https://example.com/alerts"},
	account.LowBalanceRearmed{Threshold: money.MustParse("5.00"), Available: money.MustParse("30.00")},
	account.NotificationAttempted{AlertID: "lba_01", Attempt: 1, Status: 503, Error: "HTTP 503", NextAttemptAt: ptr(time.Date(2026, 11, 23, 12, 1, 0, 0, time.UTC))},
}

var planSamples = []plan.Event{
	plan.Set{Plan: plan.Plan{Name: "pro", APIAccess: true, MonthlyFee: money.MustParse("20.00"), IncludedCredits: money.MustParse("5.00"),
		Currency: money.USD, MaxKeys: 10, DefaultRateLimit: 1200},
		Previous: &plan.Plan{Name: "pro", APIAccess: true, Currency: money.USD}},
}

var modelSamples = []pricing.Event{
	pricing.ModelSet{Model: pricing.Model{Name: "nano-banana-2", Type: pricing.TypeImage, Price: money.MustParse("0.90"), Currency: money.USD,
		Provider: "fal", ProviderModel: "fal-ai/nano-banana", Options: pricing.Options{TimeoutMS: 60000, Retries: 2, Sizes: []string{"1024x1024"}}},
		PreviousPrice: ptr(money.MustParse("0.80"))},
}

func ptr[T any](v T) *T { return &v }

var userSamples = []user.Event{
	user.Registered{UserID: "usr_01", Email: "a@example.com", Role: user.RoleCustomer, AccountID: "acc_01", PasswordHash: "$2a$10$hash"},
}

func TestGoldenEvents(t *testing.T) {
	checkGolden(t, AccountCodec(), accountSamples)
	checkGolden(t, UserCodec(), userSamples)
	checkGolden(t, ModelCodec(), modelSamples)
	checkGolden(t, PlanCodec(), planSamples)
}

func checkGolden[E codec.Named](t *testing.T, c *codec.Codec[E], samples []E) {
	covered := map[string]bool{}
	for _, ev := range samples {
		name, version, data, err := c.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		covered[name] = true
		path := filepath.Join("testdata", "events", fmt.Sprintf("%s.v%d.json", name, version))
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, data, "", "  ")
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(pretty.Bytes(), '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: no golden file (run go test ./ledger -update): %v", name, err)
		}
		if got := append(pretty.Bytes(), '\n'); !bytes.Equal(got, golden) {
			t.Errorf("%s v%d encodes as\n%s\nwant golden\n%s", name, version, got, golden)
		}
		// The golden bytes decode back into the same event.
		back, err := c.Decode(name, version, golden)
		if err != nil {
			t.Fatalf("decoding golden %s: %v", name, err)
		}
		_, _, again, _ := c.Encode(back)
		if !bytes.Equal(again, data) {
			t.Errorf("%s: golden does not round-trip: %s vs %s", name, again, data)
		}
	}
	for name := range c.Types() {
		if !covered[name] {
			t.Errorf("event %s has no sample and no golden file", name)
		}
	}
}
