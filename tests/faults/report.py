"""Write the fault-matrix table into docs/reliability.md.

    python -m tests.faults.report [results.jsonl] [--doc docs/reliability.md] [--print]

Reads the JSON records the fault suite appends (one per cell variant and delivery mode, see
tests/faults/matrix.py), keeps the latest record of each (cell, variant, mode), orders them as the
matrix of issue #3, and replaces everything between ``<!-- matrix:start -->`` and
``<!-- matrix:end -->`` in the document: first the two modes side by side, then every record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tests.faults.matrix import ROOT, results_path

START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
ORDER = [
    "duplicate callbacks", "callback + poll race", "callback lost", "callback early", "two workers",
    "deploy overlap", "worker SIGKILL mid-delivery", "worker SIGKILL, credits on", "Telegram 429",
    "Telegram 5xx / timeouts", "Telegram 403",
    "URL rejected / bytes fail", "Kie fail / 5xx / 429", "Postgres restart", "Temporal restart", "bot down",
    "Postgres outage under the polling bot", "bot crash between admit and start", "ambiguous start",
]
MODES = ("send", "edit")
# Counts worth a column of their own; the rest of `extra` is shown compactly.
SKIP_EXTRA = {"problems"}


def load(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    session = None
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("session"):
            session = rec
            continue
        rec.setdefault("mode", "send")  # records from before the edit mode
        latest[(rec["cell"], rec["variant"], rec["mode"])] = rec
    records = sorted(latest.values(), key=lambda r: (ORDER.index(r["cell"]) if r["cell"] in ORDER else 99,
                                                     MODES.index(r["mode"]) if r["mode"] in MODES else 9, r["at"]))
    return records, session


def verdict(r: dict[str, Any]) -> str:
    complete = r["completed"] == r["n"] and r["lost"] == 0 and r["db_mismatch"] == 0
    if complete and r["duplicates"] == 0:
        return "✅"
    if r.get("note"):
        return f"⚠️ {r['note']}"
    return "❌"


def fmt_states(states: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(states.items()))


def fmt_extra(extra: dict[str, Any]) -> str:
    parts = []
    for k, v in extra.items():
        if k in SKIP_EXTRA:
            continue
        if isinstance(v, dict):
            v = "/".join(f"{a}:{b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return " ".join(parts).replace("|", "/")


def side_by_side(records: list[dict[str, Any]]) -> list[str]:
    """One row per (cell, variant): repeated pictures and losses in each mode, and edit mode's notices."""
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        rows.setdefault((r["cell"], r["variant"]), {})[r["mode"]] = r

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "– | –"
        return f"{r['duplicates']} | {r['lost']}"

    lines = [
        "| cell | variant | N | send: repeated pictures | send: lost | edit: repeated pictures | edit: lost | "
        "edit: ✅ notices (repeated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (c, v), by_mode in rows.items():
        n = max(r["n"] for r in by_mode.values())
        edit = by_mode.get("edit")
        notices = f"{edit.get('notices', 0)} ({edit.get('notice_repeats', 0)})" if edit else "–"
        lines.append(f"| {c} | {v} | {n} | {cell(by_mode.get('send'))} | {cell(edit)} | {notices} |")
    totals = {m: (sum(r["duplicates"] for r in records if r["mode"] == m),
                  sum(r["lost"] for r in records if r["mode"] == m),
                  sum(r["n"] for r in records if r["mode"] == m)) for m in MODES}
    lines.append("")
    lines.append("; ".join(f"{m}: {t[2]} generations, {t[0]} repeated pictures, {t[1]} lost"
                           for m, t in totals.items() if t[2]) + ".")
    return lines


def table(records: list[dict[str, Any]], session: dict[str, Any] | None) -> str:
    lines = side_by_side(records) + [
        "",
        "Every record:",
        "",
        "| cell | variant | mode | N | results in chat | photos | duplicates | ✅ notices (repeated) | lost | "
        "terminal states (Postgres) | counts | s | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        notices = f"{r.get('notices', 0)} ({r.get('notice_repeats', 0)})" if r["mode"] == "edit" else "–"
        lines.append(
            f"| {r['cell']} | {r['variant']} | {r['mode']} | {r['n']} | {r['results_delivered']} | {r['photos']} | "
            f"{r['duplicates']} | {notices} | {r['lost']} | {fmt_states(r['states'])} | `{fmt_extra(r['extra'])}` | "
            f"{r['seconds']} | {verdict(r)} |"
        )
    total_n = sum(r["n"] for r in records)
    dups = sum(r["duplicates"] for r in records)
    lost = sum(r["lost"] for r in records)
    when = max((r["at"] for r in records), default="-")
    footer = (f"\n{len(records)} cell variants, {total_n} generations, {dups} duplicates, {lost} lost; "
              f"latest record {when}.")
    if session:
        footer += (f" Last suite run: {session['tests']} tests ({session['passed']} passed, "
                   f"{session['xfailed']} xfailed, {session['failed']} failed) in {session['seconds']:.0f} s "
                   f"on {session['cpus']} cores, {session['at']}.")
    return "\n".join(lines) + "\n" + footer + "\n"


def write_doc(doc: Path, text: str) -> None:
    content = doc.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{doc}: markers {START} / {END} not found")
    head, rest = content.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(results_path()))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "reliability.md"))
    ap.add_argument("--print", action="store_true", help="print the table instead of writing the document")
    args = ap.parse_args(argv)
    records, session = load(Path(args.results))
    if not records:
        print(f"no records in {args.results}", file=sys.stderr)
        return 1
    text = table(records, session)
    if args.print:
        print(text)
    else:
        write_doc(Path(args.doc), text)
        print(f"{args.doc}: matrix of {len(records)} records from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
