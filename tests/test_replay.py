"""Replay tests: GenerationWorkflow must replay recorded histories without non-determinism errors.

Committed histories (tests/histories/*.json) were recorded from real runs of earlier versions; a
change to the workflow's command sequence that would break running workflows fails here (use
`workflow.patched` for such changes). Re-record with REGENERATE_HISTORIES=1 only when the change is
meant to be incompatible and no old workflow can still be running.
"""

import asyncio
import os
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from imagegen.contracts import GENERATION_SHAPE, LEAN_SHAPE, LOCAL_CREATE_SHAPE, GenerationInput, GenerationResult
from tests.support.images import make_png
from tests.support.stack import start_generation_workflow

from worker import build_workers
from workflows.generation import GenerationWorkflow

HISTORIES = Path(__file__).parent / "histories"

SCENARIOS = {
    "callback": dict(),
    "polling": dict(lose_callback=True),
    "kie_fail": dict(prompt="a thing [fail]"),
    "fallback_text": dict(file_mode="404"),
    "record_info_backoff": dict(lose_callback=True, record_info_errors=[500, 429]),
    "delivery_retry": dict(telegram_fail=("sendPhoto", 502, "Bad Gateway")),
    # Recorded after the operator-visibility change (search attributes, details, summaries):
    "visible_callback": dict(),
    "visible_fallback_bytes": dict(file_mode="ok", telegram_fail=("sendPhoto", 400, "Bad Request: failed to get HTTP URL content")),
    # Recorded after the lean-finish change (the delivery shows the final status; finish is the fallback):
    "lean_callback": dict(),
    "lean_status_deferred": dict(telegram_fail=("editMessageText", 502, "Bad Gateway")),
    # Recorded after the edit-inputs change (an edit's pictures uploaded to Kie first; issue 16), with
    # one upload whose answer was lost (the activity is retried and reuses what it recorded):
    "edit_album": dict(edit=3, upload_errors=[None, "lost_answer"]),
    # Recorded with issue 18's lean shape (GenerationInput.shape = LEAN_SHAPE: no patch markers,
    # recordInfo as a local activity, no "delivering" upsert), with and without a price (CREDITS=on):
    "shaped_callback": dict(shape=LEAN_SHAPE),
    "shaped_polling_backoff": dict(shape=LEAN_SHAPE, lose_callback=True, record_info_errors=[500, 429]),
    "shaped_credits_kie_fail": dict(shape=LEAN_SHAPE, prompt="a thing [fail]", price=2),
    "shaped_edit": dict(shape=LEAN_SHAPE, edit=2),
    # Recorded with the local-create shape (LOCAL_CREATE_SHAPE: createTask a local activity when Kie's
    # window has room, the queued activity when the local attempt could not), with an edit and credits:
    "local_create_callback": dict(shape=LOCAL_CREATE_SHAPE),
    "local_create_retried": dict(shape=LOCAL_CREATE_SHAPE, create_errors=[500]),
    "local_create_edit": dict(shape=LOCAL_CREATE_SHAPE, edit=1),
    "local_create_credits_kie_fail": dict(shape=LOCAL_CREATE_SHAPE, prompt="a thing [fail]", price=2),
    # Recorded with the local-delivery shape (LOCAL_DELIVERY_SHAPE: the delivery a local activity too,
    # the delivery activity when the local attempt could not finish), with an edit and credits:
    "local_delivery_callback": dict(),
    "local_delivery_retried": dict(telegram_fail=("sendPhoto", 502, "Bad Gateway")),
    "local_delivery_edit": dict(edit=1),
    "local_delivery_credits_kie_fail": dict(prompt="a thing [fail]", price=2),
}


async def record(stack, name: str) -> WorkflowHistory:
    knobs = dict(SCENARIOS[name])
    prompt = knobs.pop("prompt", "a red fox in snow")
    if "telegram_fail" in knobs:
        stack.tg.fail_next(*knobs.pop("telegram_fail"))
    pictures = knobs.pop("edit", 0)
    price = knobs.pop("price", 0)
    shape = knobs.pop("shape", GENERATION_SHAPE)  # the shape the committed history was recorded with
    for key, value in knobs.items():
        setattr(stack.kie, key, value)
    if pictures:
        handle, _, _ = await stack.start_edit([make_png(16, 16, seed=60 + i) for i in range(pictures)],
                                              prompt="merge them", model="seedream45_edit", ratio="1:1", shape=shape)
    else:
        handle, _, _ = await stack.start_generation(prompt=prompt, price=price, shape=shape)
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


# ------------------------------------------------------------------ changing the workflow safely
# README, "Changing the workflow": a change to the command sequence goes behind workflow.patched, so
# running generations (recorded before the change) replay the old path and new ones take the new.
# Shown on one example change: wait one second before creating the Kie task.


@workflow.defn(name="GenerationWorkflow", sandboxed=False)
class UnpatchedChange(GenerationWorkflow):
    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationResult:
        return await super().run(inp)

    async def _generate(self, inp):
        await workflow.sleep(timedelta(seconds=1))  # a new timer command, in every history
        return await super()._generate(inp)


@workflow.defn(name="GenerationWorkflow", sandboxed=False)
class PatchedChange(GenerationWorkflow):
    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationResult:
        return await super().run(inp)

    async def _generate(self, inp):
        if workflow.patched("wait-before-create"):  # only histories that took the new path have it
            await workflow.sleep(timedelta(seconds=1))
        return await super()._generate(inp)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_an_unpatched_change_breaks_running_histories(path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[UnpatchedChange]).replay_workflow(history)


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_a_patched_change_replays_running_histories(path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=[PatchedChange]).replay_workflow(history)


async def test_a_patched_change_runs_the_new_path_for_new_generations(stack):
    """New workflows take the patched path (the marker and the timer are in their history) and
    still deliver; their history replays under the patched code."""
    queue = f"{stack.task_queue}-patched"
    async with AsyncExitStack() as running:
        for worker in build_workers(stack.client, queue, stack.activities, workflows=[PatchedChange]):
            await running.enter_async_context(worker)
        handle, _, chat_id = await start_generation_workflow(stack.client, stack.bot, queue, stack.poll_schedule,
                                                             prompt="a red fox in snow", ratio="1:1")
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.outcome == "done" and len(stack.photos_for(chat_id)) == 1
    history = await handle.fetch_history()
    kinds = [e.event_type for e in history.events]
    assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds and EventType.EVENT_TYPE_TIMER_STARTED in kinds
    await Replayer(workflows=[PatchedChange]).replay_workflow(history)
