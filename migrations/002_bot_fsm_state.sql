-- The bot's conversation state (aiogram FSM), shared by every bot process, so a conversation
-- survives a restart or a deploy overlap (another process takes over polling mid-conversation).
CREATE TABLE IF NOT EXISTS bot_fsm_state (
    key        text PRIMARY KEY,
    state      text,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
