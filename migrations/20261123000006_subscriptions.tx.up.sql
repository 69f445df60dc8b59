-- An account's subscription: the plan it pays for and when its period
-- ends (the renewal sweep looks for ends that have passed).
ALTER TABLE accounts
    ADD COLUMN subscription_plan text,
    ADD COLUMN period_end        timestamptz;
CREATE INDEX accounts_renewal_due ON accounts (period_end) WHERE period_end IS NOT NULL;
