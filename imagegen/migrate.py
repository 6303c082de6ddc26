"""Apply pending SQL migrations from migrations/ once, safely when several processes start together.

Files are named NNN_name.sql and applied in order, each in its own transaction, under a
session-level advisory lock so that two starting processes never apply the same file twice.

Command: ``python -m imagegen.migrate`` (uses DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x1A6E_0001  # arbitrary, fixed: "migrations" advisory lock
_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
log = logging.getLogger("imagegen.migrate")


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".sql":
            if not _NAME.match(path.name):
                raise ValueError(f"migration file name must look like 001_name.sql: {path.name}")
            found.append((path.stem, path))
    return found


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is pending; return the names applied by this call."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, path in migration_files(directory):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
                log.info("MIGRATION_APPLIED %s", version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dsn = os.environ.get("DATABASE_URL", "").strip()
    if not dsn:
        print("DATABASE_URL is required but not set", file=sys.stderr)
        return 2
    applied = asyncio.run(apply_migrations(dsn))
    print(f"migrations applied: {len(applied)} ({', '.join(applied) or 'none pending'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
