-- Reservations answered 503 while their append's outcome was unknown
-- (the event store did not answer in time). Not a read model: nothing in
-- the events says the caller was refused. If such an append landed after
-- all, the sweeper of any instance, also after a restart, releases the hold
-- instead of running the call.
CREATE TABLE reservations_in_doubt (
    task_id    text PRIMARY KEY,
    account_id text        NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now()
);
