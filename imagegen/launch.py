"""Starting a GenerationWorkflow: the one place that knows how (the bot's ratio tap, tests, the demo).

The workflow starts searchable and readable in the Temporal UI: the first search attributes (user,
chat, model, GenerationState=creating), a one-line static summary and the full parameters as static
details, and a bounded execution timeout.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from imagegen import visibility
from imagegen.contracts import GENERATION_SHAPE, GenerationInput, GenerationResult, workflow_id_for
from imagegen.models import MODELS

# Longest a generation can take: polling gives up after max_wait (POLL_SCHEDULE), delivery retries
# for at most an hour (workflows/generation.py, schedule_to_close), plus the final status edit.
DELIVERY_WINDOW = timedelta(hours=1)
MARGIN = timedelta(minutes=10)
# One start (or describe) request: a frontend that does not answer must not hang the bot's handler.
RPC_TIMEOUT = timedelta(seconds=10)


def deployment_fields(settings) -> dict:
    """The GenerationInput fields that come from this deployment's settings (imagegen.settings.Settings),
    not from the user's request: the bot's ratio tap and the sweep build the input with the same."""
    return dict(poll_schedule=[[u, i] for u, i in settings.poll_schedule], direct_kinds=settings.direct_kinds,
                shape=GENERATION_SHAPE)


def generation_price(settings, model: str, options: dict[str, str] | None) -> int:
    """GenerationInput.price: the model's price in credits with CREDITS=on (imagegen/prices.py), else 0."""
    from imagegen.prices import price

    return price(model, options) if settings.credits else 0


def execution_timeout(max_wait_seconds: float) -> timedelta:
    return timedelta(seconds=max_wait_seconds) + DELIVERY_WINDOW + MARGIN


async def start_generation(client: Client, inp: GenerationInput, *, task_queue: str,
                           workflow_id: str | None = None) -> WorkflowHandle:
    """Start the workflow for `inp` (id `workflow_id`, by default contracts.workflow_id_for its job
    and model; a second start of the same job raises temporalio's WorkflowAlreadyStartedError)."""
    model = MODELS[inp.model]
    max_wait = float(inp.poll_schedule[-1][0])
    return await client.start_workflow(
        "GenerationWorkflow",
        inp,
        id=workflow_id or workflow_id_for(inp.job_id, inp.model),
        task_queue=task_queue,
        result_type=GenerationResult,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        execution_timeout=execution_timeout(max_wait),
        rpc_timeout=RPC_TIMEOUT,
        search_attributes=visibility.initial_attributes(user_id=inp.user_id, chat_id=inp.chat_id, model=inp.model),
        static_summary=visibility.static_summary(model_title=model.title("en"), aspect_ratio=inp.aspect_ratio,
                                                 user_id=inp.user_id, prompt=inp.prompt),
        static_details=visibility.static_details(
            job_id=inp.job_id, model_title=model.title("en"), kie_model=model.kie_model, aspect_ratio=inp.aspect_ratio,
            user_id=inp.user_id, chat_id=inp.chat_id, prompt=inp.prompt,
            extra={"Poll schedule": ", ".join(f"{i:g}s until {u:g}s" for u, i in inp.poll_schedule),
                   **({"Input pictures": len(inp.images)} if inp.images else {})},
        ),
    )


MISSING = "MISSING"


async def workflow_status(client: Client, workflow_id: str) -> str | None:
    """The workflow's status as the server names it (RUNNING, COMPLETED, CANCELED, TERMINATED,
    TIMED_OUT, FAILED, …), MISSING when it has no such workflow, None when it cannot be asked now."""
    try:
        desc = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        return MISSING if exc.status == RPCStatusCode.NOT_FOUND else None
    except (asyncio.TimeoutError, OSError):
        return None
    return desc.status.name if desc.status is not None else "RUNNING"


async def workflow_exists(client: Client, workflow_id: str) -> bool | None:
    """True/False when the server says so; None when it cannot be asked right now."""
    status = await workflow_status(client, workflow_id)
    return None if status is None else status != MISSING


async def ensure_started(client: Client, inp: GenerationInput, *, task_queue: str,
                         workflow_id: str | None = None) -> str:
    """Start the workflow of `inp` unless it exists; safe to repeat (the workflow id is the job's:
    `workflow_id`, the one its row recorded, or by default contracts.workflow_id_for).

    "started"  this call started it;
    "already"  it had been started before (a repeated press, the sweep, another bot);
    "accepted" the start failed ambiguously (e.g. timed out) but the server has the workflow;
    "unknown"  the start failed and the server cannot be asked: the job stays 'created' and the
               sweep (imagegen/bot/sweep.py) starts or closes it later.
    Raises the start's error only when the server says the workflow does not exist."""
    try:
        await start_generation(client, inp, task_queue=task_queue, workflow_id=workflow_id)
        return "started"
    except WorkflowAlreadyStartedError:
        return "already"
    except Exception:
        exists = await workflow_exists(client, workflow_id or workflow_id_for(inp.job_id, inp.model))
        if exists:
            return "accepted"
        if exists is None:
            return "unknown"
        raise
