-- Snapshots of aggregates' states (accounts), so that loading one folds
-- only the events after its snapshot rather than its whole history. Not a
-- read model and not a source of truth: a cache of the command side's
-- fold, checked against the stream when read (the commit it names must be
-- there, with that hash) and ignored when it does not fit.
CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    stream_seq     bigint      NOT NULL,
    seq            bigint      NOT NULL,
    hash           text        NOT NULL,
    state          bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
