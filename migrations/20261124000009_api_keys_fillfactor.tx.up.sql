-- last_used_at is rewritten about once a second for every key in use. With
-- full pages each such update moved the row to another page and touched
-- all three indexes (23 µs a row in the 1,000-account benchmark, the third
-- costliest statement there). Room left on each page lets Postgres update
-- in place (a HOT update: no index is touched). Pages written from now on
-- keep the room; a table from before fills as rows are rewritten.
ALTER TABLE api_keys SET (fillfactor = 50);
