-- Usage: per account × key × model × bucket, counted when a call ends.
-- The same counts are kept per minute, hour and day so any range is read
-- from the coarsest table that fits. key_id is '' for calls made with a
-- user session.
CREATE TABLE usage_minute (
    account_id text           NOT NULL,
    key_id     text           NOT NULL,
    model      text           NOT NULL,
    bucket     timestamptz    NOT NULL,
    calls      bigint         NOT NULL DEFAULT 0,
    spend      numeric(20, 2) NOT NULL DEFAULT 0,
    failures   bigint         NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, bucket, key_id, model)
);
CREATE TABLE usage_hour (LIKE usage_minute INCLUDING ALL);
CREATE TABLE usage_day (LIKE usage_minute INCLUDING ALL);

-- A key's use in a calendar month (UTC): charged calls and spend.
CREATE TABLE key_usage_month (
    key_id text           NOT NULL,
    month  text           NOT NULL, -- 2026-11
    calls  bigint         NOT NULL DEFAULT 0,
    spend  numeric(20, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, month)
);

-- The statement: one line per movement of the balance, with the balance
-- after it. seq numbers an account's lines in order, for keyset paging.
CREATE TABLE wallet_entries (
    account_id    text           NOT NULL,
    seq           bigint         NOT NULL,
    id            text           NOT NULL,
    type          text           NOT NULL, -- topup, charge, adjustment, refund
    amount        numeric(20, 2) NOT NULL, -- signed effect on the balance
    balance_after numeric(20, 2) NOT NULL,
    task_id       text,
    reference     text,
    created_at    timestamptz    NOT NULL,
    stream_seq    bigint         NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- The usage projection's memory of calls not yet ended: their key and
-- model, which the ending events do not repeat.
CREATE TABLE usage_open_tasks (
    task_id    text PRIMARY KEY,
    account_id text NOT NULL,
    key_id     text NOT NULL,
    model      text NOT NULL
);
