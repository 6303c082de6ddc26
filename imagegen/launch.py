"""Starting a GenerationWorkflow: the one place that knows how (the bot's ratio tap, tests, the demo).

The workflow starts searchable and readable in the Temporal UI: the first search attributes (user,
chat, model, GenerationState=creating), a one-line static summary and the full parameters as static
details, and a bounded execution timeout.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from imagegen import visibility
from imagegen.contracts import GenerationInput, GenerationResult, workflow_id_for
from imagegen.models import MODELS

# Longest a generation can take: polling gives up after max_wait (POLL_SCHEDULE), delivery retries
# for at most an hour (workflows/generation.py, schedule_to_close), plus the final status edit.
DELIVERY_WINDOW = timedelta(hours=1)
MARGIN = timedelta(minutes=10)


def execution_timeout(max_wait_seconds: float) -> timedelta:
    return timedelta(seconds=max_wait_seconds) + DELIVERY_WINDOW + MARGIN


async def start_generation(client: Client, inp: GenerationInput, *, task_queue: str) -> WorkflowHandle:
    """Start the workflow for `inp` (id from its job id; a second start of the same job raises
    temporalio's WorkflowAlreadyStartedError)."""
    model = MODELS[inp.model]
    max_wait = float(inp.poll_schedule[-1][0])
    return await client.start_workflow(
        "GenerationWorkflow",
        inp,
        id=workflow_id_for(inp.job_id),
        task_queue=task_queue,
        result_type=GenerationResult,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        execution_timeout=execution_timeout(max_wait),
        search_attributes=visibility.initial_attributes(user_id=inp.user_id, chat_id=inp.chat_id, model=inp.model),
        static_summary=visibility.static_summary(model_title=model.title("en"), aspect_ratio=inp.aspect_ratio,
                                                 user_id=inp.user_id, prompt=inp.prompt),
        static_details=visibility.static_details(
            job_id=inp.job_id, model_title=model.title("en"), kie_model=model.kie_model, aspect_ratio=inp.aspect_ratio,
            user_id=inp.user_id, chat_id=inp.chat_id, prompt=inp.prompt,
            extra={"Poll schedule": ", ".join(f"{i:g}s until {u:g}s" for u, i in inp.poll_schedule)},
        ),
    )
