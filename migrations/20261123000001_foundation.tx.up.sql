-- Where each projection stands in the event stream. A projection writes its
-- rows and its position in one transaction, so the two never disagree.
CREATE TABLE projection_positions (
    name          text PRIMARY KEY,
    position      bigint      NOT NULL DEFAULT 0,
    events        bigint      NOT NULL DEFAULT 0,
    last_event_at timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id            text PRIMARY KEY,
    email         text        NOT NULL,
    owner_user_id text        NOT NULL,
    plan          text        NOT NULL,
    status        text        NOT NULL,
    currency      char(3)     NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       bigint      NOT NULL
);
CREATE INDEX accounts_email ON accounts (email);

-- The wallet: available + held = balance. Both are folds of the postings
-- on the account's events; neither may go below zero.
CREATE TABLE wallets (
    account_id text PRIMARY KEY REFERENCES accounts (id),
    currency   char(3)        NOT NULL,
    available  numeric(20, 2) NOT NULL DEFAULT 0 CHECK (available >= 0),
    held       numeric(20, 2) NOT NULL DEFAULT 0 CHECK (held >= 0),
    updated_at timestamptz    NOT NULL,
    version    bigint         NOT NULL
);

CREATE TABLE topups (
    id         text PRIMARY KEY,
    account_id text           NOT NULL REFERENCES accounts (id),
    amount     numeric(20, 2) NOT NULL CHECK (amount > 0),
    reference  text           NOT NULL,
    actor      text           NOT NULL,
    created_at timestamptz    NOT NULL,
    stream_seq bigint         NOT NULL,
    UNIQUE (account_id, reference)
);

CREATE TABLE users (
    id         text PRIMARY KEY,
    email      text        NOT NULL UNIQUE,
    role       text        NOT NULL,
    account_id text,
    created_at timestamptz NOT NULL
);
