-- Issue 9: the exact sliding window in front of Kie's createTask (imagegen/pacer.py). One row per
-- call that was given a time slot; rows older than two windows are deleted as new ones arrive.
CREATE TABLE IF NOT EXISTS rate_slots (
    name text        NOT NULL,
    at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_slots_name_at ON rate_slots (name, at DESC);
