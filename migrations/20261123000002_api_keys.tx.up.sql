-- API keys: never the secret, only its SHA-256 (hex), prefix and last 4.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    account_id   text        NOT NULL REFERENCES accounts (id),
    name         text        NOT NULL,
    hash         text        NOT NULL UNIQUE,
    prefix       text        NOT NULL,
    last4        text        NOT NULL,
    scopes       text[]      NOT NULL,
    quota_calls  bigint,
    quota_spend  numeric(20, 2),
    ip_allowlist text[]      NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    rate_limit   integer     NOT NULL,
    status       text        NOT NULL,
    created_at   timestamptz NOT NULL,
    rotated_at   timestamptz,
    revoked_at   timestamptz,
    -- Written in batches by the instance that saw the use, at most once a
    -- second per key; not an event, since it moves no money and changes no
    -- permission.
    last_used_at timestamptz,
    version      bigint      NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);
