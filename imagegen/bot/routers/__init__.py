"""The bot's aiogram Routers, one per concern; imagegen.bot.handlers.build_router puts them in order."""
