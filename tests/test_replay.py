"""Replay tests: GenerationWorkflow must replay recorded histories without non-determinism errors.

Committed histories (tests/histories/*.json) were recorded from real runs of earlier versions; a
change to the workflow's command sequence that would break running workflows fails here (use
`workflow.patched` for such changes). Re-record with REGENERATE_HISTORIES=1 only when the change is
meant to be incompatible and no old workflow can still be running.
"""

import asyncio
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.generation import GenerationWorkflow

HISTORIES = Path(__file__).parent / "histories"

SCENARIOS = {
    "callback": dict(),
    "polling": dict(lose_callback=True),
    "kie_fail": dict(prompt="a thing [fail]"),
    "fallback_text": dict(file_mode="404"),
    "record_info_backoff": dict(lose_callback=True, record_info_errors=[500, 429]),
    "delivery_retry": dict(telegram_fail=("sendPhoto", 502, "Bad Gateway")),
}


async def record(stack, name: str) -> WorkflowHistory:
    knobs = dict(SCENARIOS[name])
    prompt = knobs.pop("prompt", "a red fox in snow")
    if "telegram_fail" in knobs:
        stack.tg.fail_next(*knobs.pop("telegram_fail"))
    for key, value in knobs.items():
        setattr(stack.kie, key, value)
    handle, _, _ = await stack.start_generation(prompt=prompt)
    await asyncio.wait_for(handle.result(), 30)
    return await handle.fetch_history()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_fresh_history_replays(stack, name):
    history = await record(stack, name)
    if os.environ.get("REGENERATE_HISTORIES"):
        (HISTORIES / f"{name}.json").write_text(history.to_json())
    await Replayer(workflows=[GenerationWorkflow]).replay_workflow(history)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_committed_history_replays(path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=[GenerationWorkflow]).replay_workflow(history)


def test_there_are_committed_histories():
    assert {p.stem for p in HISTORIES.glob("*.json")} == set(SCENARIOS)
