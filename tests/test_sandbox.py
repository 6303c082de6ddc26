"""imagegen/sandbox.py: the lean sandbox answers what the stock one answers and still sandboxes.

A payload codec that records every serialization context it is given (the data converter asks the
workflow instance for one per payload sequence) runs the same workflow under the stock
SandboxedWorkflowRunner and under LeanSandboxedWorkflowRunner: same contexts, same result, and the
workflow still runs in the sandbox (a restricted call still fails its workflow task).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Sequence

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from imagegen.sandbox import LeanSandboxedWorkflowRunner, workflow_runner


class RecordingCodec(PayloadCodec, WithSerializationContext):
    def __init__(self, seen: list, context: SerializationContext | None = None) -> None:
        self.seen, self.context = seen, context

    def with_context(self, context: SerializationContext) -> "RecordingCodec":
        return RecordingCodec(self.seen, context)

    def _note(self, direction: str) -> None:
        c = self.context
        if isinstance(c, ActivitySerializationContext):
            self.seen.append((direction, "activity", c.activity_type, c.activity_id, c.activity_task_queue, c.is_local))
        elif isinstance(c, WorkflowSerializationContext):
            self.seen.append((direction, "workflow"))
        else:
            self.seen.append((direction, type(c).__name__))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self._note("encode")
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self._note("decode")
        return list(payloads)


@activity.defn(name="sandbox_probe_step")
async def step(n: int) -> int:
    return n * 10


@workflow.defn(name="SandboxProbeWorkflow")
class ProbeWorkflow:
    def __init__(self) -> None:
        self._go = 0

    @workflow.signal
    def go(self, n: int) -> None:
        self._go = n

    @workflow.run
    async def run(self, n: int) -> list:
        a = await workflow.execute_activity(step, n, start_to_close_timeout=timedelta(seconds=10))
        b = await workflow.execute_local_activity(step, n + 1, start_to_close_timeout=timedelta(seconds=10))
        await workflow.wait_condition(lambda: self._go > 0)
        return [a, b, self._go, workflow.unsafe.in_sandbox()]


@workflow.defn(name="SandboxRestrictedWorkflow")
class RestrictedWorkflow:
    @workflow.run
    async def run(self) -> str:
        import os

        return os.getcwd()  # restricted in the sandbox: the workflow task fails


async def _run(client: Client, runner, seen: list) -> list:
    codec_client = Client(**{**client.config(), "data_converter": dataclasses.replace(
        DataConverter.default, payload_codec=RecordingCodec(seen))})
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(codec_client, task_queue=queue, workflows=[ProbeWorkflow], activities=[step],
                      workflow_runner=runner):
        handle = await codec_client.start_workflow(ProbeWorkflow.run, 4, id=f"probe-{queue}", task_queue=queue)
        await handle.signal(ProbeWorkflow.go, 7)
        return await handle.result()


async def test_lean_runner_gives_the_stock_runners_contexts_and_result(temporal_env):
    stock_seen: list = []
    lean_seen: list = []
    stock = await _run(temporal_env.client, SandboxedWorkflowRunner(), stock_seen)
    lean = await _run(temporal_env.client, workflow_runner(), lean_seen)
    assert stock == lean == [40, 50, 7, True]
    # Activity contexts carry the activity's id and queue, which differ per run: compare by shape.
    def shape(seen):
        return sorted((s[0], s[1], s[2] if len(s) > 2 else "", s[5] if len(s) > 5 else "") for s in seen)
    assert any(s[1] == "activity" for s in lean_seen), lean_seen  # the question is asked and answered
    assert shape(lean_seen) == shape(stock_seen)


async def test_workers_runner_still_restricts_workflow_code(temporal_env):
    """worker.py's runner passes every module through (imported once per process), but a restricted
    call in workflow code still fails the workflow task."""
    queue = f"sandbox-r-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    async with Worker(client, task_queue=queue, workflows=[RestrictedWorkflow], workflow_runner=workflow_runner()):
        handle = await client.start_workflow(RestrictedWorkflow.run, id=f"restricted-{queue}", task_queue=queue,
                                             execution_timeout=timedelta(seconds=5))
        with pytest.raises(WorkflowFailureError):
            await handle.result()  # the workflow task keeps failing (restricted), the run times out
        history = await handle.fetch_history()
        failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
        assert failed and "RestrictedWorkflowAccessError" in str(failed[0].workflow_task_failed_event_attributes)


def test_workflow_modules_hold_no_state_a_run_could_change():
    """worker.py's runner imports a workflow module once per process, not once per run: every
    top-level value assigned in workflows/ must be immutable, so one run cannot leak into another."""
    import ast
    import importlib
    from datetime import timedelta
    from pathlib import Path
    from types import MappingProxyType

    from temporalio.common import RetryPolicy

    allowed = (str, int, float, bool, bytes, tuple, frozenset, timedelta, MappingProxyType, RetryPolicy, type(None))
    root = Path(__file__).resolve().parent.parent / "workflows"
    checked = 0
    for path in sorted(root.glob("*.py")):
        module = importlib.import_module(f"workflows.{path.stem}")
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name):
                    value = getattr(module, target.id)
                    assert isinstance(value, allowed), f"{path.name}: {target.id} is a {type(value).__name__}"
                    checked += 1
    assert checked > 10  # the constants of workflows/generation.py at least


def test_payload_dataclasses_type_hints_are_worked_out_once_per_class():
    """imagegen/typehints.py: the converter decodes exactly what it decoded before, and asks
    typing.get_type_hints once per dataclass however many payloads it decodes into it."""
    import typing

    from temporalio.converter import DataConverter, _payload_converter

    from imagegen.contracts import DeliverInput, GenerationInput, PollInput, StatusProgress
    from imagegen.typehints import cache_type_hints

    converter = DataConverter.default.payload_converter
    values = [GenerationInput(job_id="j", user_id=1, chat_id=2, prompt="a fox", model="zimage",
                              aspect_ratio="1:1", status_message_id=3, poll_schedule=[[60.0, 5.0]], shape=4),
              DeliverInput(job_id="j", chat_id=2, url="https://x/y.png", model="zimage", aspect_ratio="1:1",
                           accepted={"message_id": 5, "level": "url", "owner": "o"}),
              PollInput(job_id="j", task_id="t", tick=1, reason="callback",
                        progress=StatusProgress(chat_id=2, message_id=3, lang="ru", model="zimage",
                                                aspect_ratio="1:1", elapsed=12))]
    payloads = converter.to_payloads(values)
    before = converter.from_payloads(payloads, [type(v) for v in values])
    cache_type_hints()
    cache_type_hints()  # idempotent: one cache, not a cache of a cache
    hints = _payload_converter.get_type_hints
    assert hints.cached_per_class
    original = typing.get_type_hints
    start = hints.cache_info().misses
    for _ in range(20):
        assert converter.from_payloads(payloads, [type(v) for v in values]) == before == values
    # At most one evaluation per class (fewer when an earlier test already decoded it).
    assert hints.cache_info().misses - start <= 4
    assert hints.cache_info().hits >= 20 * 4 - 4
    assert hints(GenerationInput) == original(GenerationInput) and hints(GenerationInput) is not hints(GenerationInput)
