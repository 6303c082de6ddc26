"""The bot's conversation, as one Router made of one Router per concern (order matters: the group
guard first, commands before the dialog, the catch-alls last)."""

from __future__ import annotations

from aiogram import Router

from imagegen.bot.routers import commands, conversation, edits, fallback, groups, history, language, payments, results


def build_router(credits: bool = False) -> Router:
    router = Router(name="bot")
    if credits:  # CREDITS=on: /buy /balance /paysupport and Telegram Stars payments, in every state
        router.include_router(payments.build())
    router.include_routers(
        groups.build(),  # private chats only
        commands.build(),  # /start /new /help /cancel: in every state
        language.build(),  # /lang
        history.build(),  # /history and its resend buttons
        commands.build_unknown(),  # any other /command: never a prompt
        results.build(),  # the buttons under a picture
        edits.build(),  # a photo (album, image file) to edit: in any state
        conversation.build(),  # model → prompt → options → ratio
        edits.build_refusals(),  # stickers, animations, other files: a clear answer
        fallback.build(),  # stale buttons, other messages
    )
    return router
