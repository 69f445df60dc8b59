package ledger

import (
	"github.com/ledgerd/ledgerd/domain/account"
	"github.com/ledgerd/ledgerd/domain/plan"
	"github.com/ledgerd/ledgerd/domain/pricing"
	"github.com/ledgerd/ledgerd/domain/user"
	"github.com/ledgerd/ledgerd/ledger/codec"
)

// Aggregate types: the second token of every subject.
const (
	TypeAccount = "account"
	TypeUser    = "user"
	TypeModel   = "model"
	TypePlan    = "plan"
)

// AccountCodec lists every account event and its current schema version.
// Bumping a version needs an upcaster from the previous one and a new
// golden file in testdata/events.
func AccountCodec() *codec.Codec[account.Event] {
	c := codec.New[account.Event]()
	codec.Register[account.Event, account.Opened](c, 1)
	codec.Register[account.Event, account.PlanChanged](c, 1)
	codec.Register[account.Event, account.StatusChanged](c, 1)
	codec.Register[account.Event, account.ToppedUp](c, 1)
	codec.Register[account.Event, account.KeyCreated](c, 1)
	codec.Register[account.Event, account.KeyRotated](c, 1)
	codec.Register[account.Event, account.KeyRevoked](c, 1)
	codec.Register[account.Event, account.Adjusted](c, 1)
	codec.Register[account.Event, account.TaskRequested](c, 1)
	codec.Register[account.Event, account.TaskStarted](c, 1)
	codec.Register[account.Event, account.TaskAdopted](c, 1)
	codec.Register[account.Event, account.TaskSucceeded](c, 1)
	codec.Register[account.Event, account.TaskFailed](c, 1)
	codec.Register[account.Event, account.CallbackAttempted](c, 1)
	codec.Register[account.Event, account.CreditsGranted](c, 1)
	codec.Register[account.Event, account.GrantExpired](c, 1)
	codec.Register[account.Event, account.Subscribed](c, 1)
	codec.Register[account.Event, account.SubscriptionLapsed](c, 1)
	codec.Register[account.Event, account.Refunded](c, 1)
	codec.Register[account.Event, account.NotificationsSet](c, 1)
	codec.Register[account.Event, account.LowBalanceCrossed](c, 1)
	codec.Register[account.Event, account.LowBalanceRearmed](c, 1)
	codec.Register[account.Event, account.NotificationAttempted](c, 1)
	return c
}

// ModelCodec lists every price-list event.
func ModelCodec() *codec.Codec[pricing.Event] {
	c := codec.New[pricing.Event]()
	codec.Register[pricing.Event, pricing.ModelSet](c, 1)
	return c
}

// PlanCodec lists every plan event.
func PlanCodec() *codec.Codec[plan.Event] {
	c := codec.New[plan.Event]()
	codec.Register[plan.Event, plan.Set](c, 1)
	return c
}

// UserCodec lists every user event.
func UserCodec() *codec.Codec[user.Event] {
	c := codec.New[user.Event]()
	codec.Register[user.Event, user.Registered](c, 1)
	return c
}
