-- Issue 19: the language of the conversation that admitted each request ('ru' | 'en'), so that a
-- generation the sweep starts later speaks it too (the user may never have chosen one with /lang:
-- then it came from Telegram's language_code, which only the update carried). NULL for older rows.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS lang text CHECK (lang IN ('ru', 'en'));

-- Issue 19: when the one "✅ ready" message of a generation was claimed for sending (a new message,
-- unlike the idempotent status edits: DELIVERY_MODE=edit's notice, or the final status when the
-- status message was deleted). Claimed before sending, released only when Telegram surely refused,
-- so a retried attempt never sends it twice.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS notice_sent_at timestamptz;
