"""Container health probe without curl: ``python -m imagegen.probe PORT [PATH]`` exits 0 when
``http://127.0.0.1:PORT/PATH`` (default ``/readyz``) answers 200 within 3 s, 1 otherwise."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def probe(port: int, path: str = "/readyz", timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2 or not argv[0].isdigit():
        print("usage: python -m imagegen.probe PORT [PATH]", file=sys.stderr)
        return 2
    return 0 if probe(int(argv[0]), *argv[1:]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
