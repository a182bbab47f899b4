"""The probe kind: a synthetic end-to-end check of the pipeline."""

from __future__ import annotations

import time

from agentic.tasks.v1 import tasks_pb2
from google.protobuf import duration_pb2

from workers._context import PermanentError, TaskContext


def run_probe(spec: tasks_pb2.ProbeSpec, context: TaskContext) -> tasks_pb2.ProbeResult:
    """``spec.steps`` steps of ``spec.step_millis`` ms, progress after each one.

    Fails with a non-retryable error at step ``spec.fail_at_step`` when it is set, and
    stops at a step boundary once cancellation was requested.
    """
    begin = time.monotonic()
    for step in range(1, spec.steps + 1):
        context.raise_if_cancelled()
        if spec.step_millis:
            # The probe's work is to take time; a real kind would compute or call out here.
            # (Zero-length steps skip the call: sleep(0) still yields the GIL and the CPU.)
            time.sleep(spec.step_millis / 1000)
        if step == spec.fail_at_step:
            raise PermanentError(f"probe failed at step {step} as asked", reason="PROBE_FAILED")
        context.report_progress(step / spec.steps, f"step {step} of {spec.steps}")
    elapsed = duration_pb2.Duration()
    elapsed.FromNanoseconds(int((time.monotonic() - begin) * 1e9))
    return tasks_pb2.ProbeResult(steps_completed=spec.steps, elapsed=elapsed)
