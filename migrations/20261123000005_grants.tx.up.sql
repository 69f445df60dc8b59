-- Grants: credits the platform gives, spent before paid money, that expire.
-- The wallet keeps them apart from paid money, as the journal does.
ALTER TABLE wallets
    ADD COLUMN credits      numeric(20, 2) NOT NULL DEFAULT 0 CHECK (credits >= 0),
    ADD COLUMN held_credits numeric(20, 2) NOT NULL DEFAULT 0 CHECK (held_credits >= 0);

CREATE TABLE grants (
    id             text PRIMARY KEY,
    account_id     text           NOT NULL,
    amount         numeric(20, 2) NOT NULL CHECK (amount > 0),
    expires_at     timestamptz    NOT NULL,
    reason         text           NOT NULL,
    source         text           NOT NULL,
    actor          text           NOT NULL,
    created_at     timestamptz    NOT NULL,
    expired_at     timestamptz,
    expired_amount numeric(20, 2),
    stream_seq     bigint         NOT NULL
);
CREATE INDEX grants_account ON grants (account_id, expires_at);
-- What the expiry sweep looks for.
CREATE INDEX grants_due ON grants (expires_at) WHERE expired_at IS NULL;

-- Statement lines say what each movement did to paid money (amount,
-- balance_after) and to grants (credits, credits_after) separately.
ALTER TABLE wallet_entries
    ADD COLUMN credits       numeric(20, 2) NOT NULL DEFAULT 0,
    ADD COLUMN credits_after numeric(20, 2) NOT NULL DEFAULT 0;
