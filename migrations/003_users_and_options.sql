-- Issue 8: the language each user chose (/lang; absent: taken from Telegram's language_code), the
-- model options of each job (e.g. Seedream's quality, for "Again" and /history) and the group chats
-- already told that the bot works in private chats only (told once, then quiet).
CREATE TABLE IF NOT EXISTS bot_users (
    user_id    bigint PRIMARY KEY,
    lang       text NOT NULL CHECK (lang IN ('ru', 'en')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS options jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE TABLE IF NOT EXISTS group_notices (
    chat_id     bigint PRIMARY KEY,
    notified_at timestamptz NOT NULL DEFAULT now()
);
