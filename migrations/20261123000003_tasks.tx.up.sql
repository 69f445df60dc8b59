-- Generation tasks: one row per accepted call, from request to outcome.
CREATE TABLE tasks (
    id                text PRIMARY KEY,
    account_id        text           NOT NULL,
    key_id            text,
    model             text           NOT NULL,
    type              text           NOT NULL,
    status            text           NOT NULL, -- pending, running, succeeded, failed
    price             numeric(20, 2) NOT NULL,
    cost              numeric(20, 2) NOT NULL DEFAULT 0, -- what was captured
    currency          char(3)        NOT NULL,
    provider          text           NOT NULL,
    provider_model    text,
    provider_ref      text,
    input             jsonb          NOT NULL,
    output            jsonb,
    error_code        text,
    error_message     text,
    owner             text           NOT NULL,
    idempotency_key   text,
    request_hash      text,
    callback_url      text,
    callback_status   text, -- pending, delivered, failed (gave up); null: no callback
    callback_attempts integer        NOT NULL DEFAULT 0,
    callback_next_at  timestamptz,
    requested_at      timestamptz    NOT NULL,
    started_at        timestamptz,
    completed_at      timestamptz,
    hold_expires_at   timestamptz    NOT NULL,
    version           bigint         NOT NULL
);
CREATE INDEX tasks_account ON tasks (account_id, requested_at DESC);
-- Idempotency keys are answered from here once the aggregate has forgotten them.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The sweeper looks only at open tasks.
CREATE INDEX tasks_open ON tasks (hold_expires_at) WHERE status IN ('pending', 'running');
CREATE INDEX tasks_callbacks ON tasks (callback_next_at) WHERE callback_status = 'pending';
