"""Which exceptions mean "the database is away" (refused, restarting, shut down, connection lost),
as opposed to a bug or a constraint violation. Used by the bot to answer users during an outage and
by the leadership to keep polling while nobody can reach Postgres."""

from __future__ import annotations

import asyncio

import asyncpg

_UNAVAILABLE = (
    OSError,  # connection refused / reset, no route
    asyncio.TimeoutError,  # connect or pool acquire timed out
    asyncpg.PostgresConnectionError,  # connection does not exist / failure
    asyncpg.InterfaceError,  # pool closing, connection closed under a query
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, "cannot connect now" (starting)
    asyncpg.exceptions.TooManyConnectionsError,
)


def is_database_unavailable(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 5:  # look through wrapped causes
        if isinstance(exc, _UNAVAILABLE):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
