"""The Telegram bot: conversation handlers (aiogram), the HTTP endpoint for Kie callbacks, and the app."""
