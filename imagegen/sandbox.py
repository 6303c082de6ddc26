"""The workflow sandbox without its per-payload toll (issue 18, throughput).

temporalio 1.35 asks the workflow instance for a serialization context for every payload sequence
it encodes or decodes (three visits of each activation and one of each completion:
``_CommandAwareDataConverter._get_current_dc``). Under the sandbox each question is an ``exec`` of a
source string, compiled anew every time, inside ``importer.applied()`` (sys.modules and
``__import__`` swapped). py-spy on the benchmark's worker: about a sixth of the worker's event-loop
time went there, for an answer that is a dictionary lookup (the pending activity's task queue and id).

:class:`LeanSandboxedWorkflowRunner` is the stock :class:`SandboxedWorkflowRunner` (same
restrictions, same per-run module isolation, same determinism checks for workflow code) with two
changes to its instance:

* the two context questions are asked of the sandboxed instance directly: they run no workflow code,
  import nothing and touch no restricted API (``_WorkflowInstanceImpl.get_serialization_context``
  builds a frozen dataclass from the instance's info and pending activities);
* the few fixed source strings the sandbox executes (activate, context, instance creation) are
  compiled once per process instead of on every call. ``exec`` of the compiled code is the same
  statement in the same globals.

It relies on the sandbox's private ``_Instance`` (the dependency is pinned: requirements.lock);
``tests/test_sandbox.py`` checks the contexts it answers equal the stock runner's and that a
workflow still runs and is still sandboxed under it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import temporalio.workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _Instance

_IN_SANDBOX = "__temporal_in_sandbox"
_compiled: dict[str, Any] = {}


def _code(source: str):
    code = _compiled.get(source)
    if code is None:
        code = _compiled[source] = compile(source, "<sandbox>", "exec")
    return code


class _LeanInstance(_Instance):
    def _run_code(self, code: str, **extra_globals: Any) -> None:
        # The stock _run_code, with the source compiled once (it is one of a handful of fixed strings).
        for k, v in extra_globals.items():
            self.globals_and_locals[k] = v
        try:
            temporalio.workflow.unsafe._set_in_sandbox(True)
            self._current_thread_id = threading.get_ident()
            exec(_code(code), self.globals_and_locals, self.globals_and_locals)
        finally:
            temporalio.workflow.unsafe._set_in_sandbox(False)
            self._current_thread_id = None
            for k in extra_globals:
                self.globals_and_locals.pop(k, None)

    def get_serialization_context(self, command_info):
        return self.globals_and_locals[_IN_SANDBOX].get_serialization_context(command_info)

    def get_external_store_context(self, command_info):
        return self.globals_and_locals[_IN_SANDBOX].get_external_store_context(command_info)


@dataclasses.dataclass(frozen=True)
class LeanSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """SandboxedWorkflowRunner whose instances skip the per-payload exec (module docstring)."""

    def create_instance(self, det):
        return _LeanInstance(det, self.runner_class, self.restrictions)


def workflow_runner() -> LeanSandboxedWorkflowRunner:
    """worker.py's runner: the lean sandbox with every module passed through.

    The stock sandbox re-imports each workflow's module (and whatever it imports that is not passed
    through) for every workflow run: ~1.35 ms of CPU per run for GenerationWorkflow on this machine,
    ~0.25 ms with every module passed through (the module is imported once per process). The
    sandbox's runtime restrictions stay (``datetime.now``, ``random``, ``os``, I/O … still fail the
    workflow task), and the replay tests run the stock, fully isolating sandbox. What is given up is
    the per-run copy of module-level state, so a workflow module must hold none that a run could
    change: tests/test_sandbox.py checks that every top-level value of workflows/ is immutable
    (constants, retry policies, read-only mappings). Everything such a module imports from this
    project was already passed through (``workflow.unsafe.imports_passed_through``)."""
    return LeanSandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())
