-- One row per generation request. The job id is also the correlation id in logs, and the
-- workflow id is 'zimage-<id>'.
CREATE TABLE IF NOT EXISTS generation_jobs (
    id                   text PRIMARY KEY,
    workflow_id          text NOT NULL UNIQUE,
    user_id              bigint NOT NULL,
    chat_id              bigint NOT NULL,
    model                text NOT NULL,
    prompt               text NOT NULL,
    aspect_ratio         text NOT NULL,
    external_task_id     text UNIQUE,
    -- created → submitted → success | fail | timeout | error; success → delivered | undeliverable
    state                text NOT NULL DEFAULT 'created',
    result_urls          text[] NOT NULL DEFAULT '{}',
    error                text,
    status_message_id    bigint,
    -- The delivery lock: taken by one atomic UPDATE (see imagegen/jobs.py), with a lease.
    delivering_at        timestamptz,
    delivery_owner       text,
    delivered_at         timestamptz,
    delivered_message_id bigint,
    delivery_level       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The lock query only ever looks at undelivered jobs.
CREATE INDEX IF NOT EXISTS idx_jobs_delivery_lock
    ON generation_jobs (id, delivering_at) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_jobs_user_created ON generation_jobs (user_id, created_at DESC);
