-- Issue 19: the language of the conversation that admitted each request ('ru' | 'en'), so that a
-- generation the sweep starts later speaks it too (the user may never have chosen one with /lang:
-- then it came from Telegram's language_code, which only the update carried). NULL for older rows.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS lang text CHECK (lang IN ('ru', 'en'));
