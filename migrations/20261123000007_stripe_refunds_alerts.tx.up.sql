-- Stripe top-ups and refunds: what a customer owes after a refund of money
-- already spent (a receivable; calls are refused while it is positive),
-- and the card payment behind each Stripe top-up, by which a refund of the
-- charge finds the top-up's account.
ALTER TABLE wallets ADD COLUMN owed numeric(20, 2) NOT NULL DEFAULT 0 CHECK (owed >= 0);
ALTER TABLE topups ADD COLUMN payment_intent text;
CREATE INDEX topups_payment_intent ON topups (payment_intent) WHERE payment_intent IS NOT NULL;

-- Low-balance alerts: one row per crossing of an account's threshold, and
-- its delivery to the account's webhook.
CREATE TABLE low_balance_alerts (
    id              text PRIMARY KEY,
    account_id      text           NOT NULL,
    threshold       numeric(20, 2) NOT NULL,
    available       numeric(20, 2) NOT NULL,
    currency        char(3)        NOT NULL,
    webhook_url     text           NOT NULL,
    status          text           NOT NULL, -- pending, delivered, failed (gave up)
    attempts        integer        NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz    NOT NULL,
    delivered_at    timestamptz,
    version         bigint         NOT NULL
);
CREATE INDEX low_balance_alerts_account ON low_balance_alerts (account_id, created_at DESC);
CREATE INDEX low_balance_alerts_due ON low_balance_alerts (next_attempt_at) WHERE status = 'pending';
