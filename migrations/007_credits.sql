-- Issue 17: per-user credits. credit_entries is append-only: every change of a balance is one entry
-- with a unique idempotency key (free:<user>, reserve:<job>, capture:<job>, release:<job>,
-- pay:<telegram_payment_charge_id>, refund:<charge id>), written in the same transaction as the
-- balance it changes, so a repeated step (a retried activity, a replayed workflow, Telegram sending
-- a payment twice) finds its key and changes nothing. A balance is never negative.
CREATE TABLE IF NOT EXISTS credit_accounts (
    user_id    bigint PRIMARY KEY,
    balance    integer NOT NULL CHECK (balance >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS credit_entries (
    id         bigserial PRIMARY KEY,
    key        text NOT NULL UNIQUE,
    user_id    bigint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('free', 'reserve', 'capture', 'release', 'payment', 'refund', 'grant')),
    delta      integer NOT NULL,           -- the change of the balance (capture: 0, the reserve took it)
    balance    integer NOT NULL,           -- the balance after this entry
    job_id     text,
    charge_id  text,
    note       text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS credit_entries_user ON credit_entries (user_id, id DESC);
CREATE INDEX IF NOT EXISTS credit_entries_job ON credit_entries (job_id) WHERE job_id IS NOT NULL;

-- Telegram Stars payments, one row per telegram_payment_charge_id (Telegram may deliver the same
-- successful_payment twice).
CREATE TABLE IF NOT EXISTS star_payments (
    charge_id   text PRIMARY KEY,
    user_id     bigint NOT NULL,
    pack        text NOT NULL,
    stars       integer NOT NULL,
    credits     integer NOT NULL,
    paid_at     timestamptz NOT NULL DEFAULT now(),
    refunded_at timestamptz
);

-- The Kie account as the balance schedule last saw it (one row): the bot admits no generation while
-- `out_of_credits` (set by a 402 from createTask or by the schedule, cleared by the schedule).
CREATE TABLE IF NOT EXISTS kie_account (
    id             smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    credits        double precision,
    out_of_credits boolean NOT NULL DEFAULT false,
    checked_at     timestamptz,
    reason         text
);
INSERT INTO kie_account (id) VALUES (1) ON CONFLICT DO NOTHING;
