"""Celery workers of the task pipeline (``agentic.tasks.v1``).

Run one with ``python -m workers`` (prefork pool, settings from ``AGENTIC_*`` variables,
see ``workers._config.WorkerConfig``) or ``celery -A workers.app worker``. The database is
the source of truth for every task; a message only says "run attempt N of task T".

Adding a task kind
==================

A kind is its proto messages, a function, one registry entry and one access-table entry.
The server derives the kind's Submit RPC from the protos: there is no servicer code to write.
Every file a new kind touches:

1. **``protos/agentic/tasks/v1/tasks.proto``**: ``TASK_KIND_<NAME>`` in ``TaskKind``; a
   ``<Name>Spec`` and a ``<Name>Result`` message with protovalidate rules;
   ``<Name>Spec <name> = 2x;`` in ``Task``'s ``oneof spec`` and
   ``<Name>Result <name>_result = 3x;`` in its ``oneof outcome`` (found by this naming,
   ``core.tasks.kind_fields``); and in
   ``TaskService`` an RPC ``Submit<Name>(Submit<Name>Request) returns (Submit<Name>Response)``,
   with a doc comment (it becomes the servicer method's docstring), whose request has
   the fields of ``SubmitProbeRequest`` (``request_id``, ``owner_id``, ``priority``,
   ``project_id``) plus ``<Name>Spec <name>``, and whose response has ``Task task``.
   ``<Name>`` is the kind in CamelCase: ``TASK_KIND_PROFILE_DATASET`` is
   ``SubmitProfileDataset`` with the spec in ``profile_dataset``. A kind whose messages
   are more than a few fields keeps its ``<Name>Spec`` and ``<Name>Result`` in a file of
   its own in the same package (``protos/agentic/tasks/v1/<name>.proto``, imported by
   ``tasks.proto``; Python code imports them from ``agentic.tasks.v1.<name>_pb2``), as
   the profile, analytics and compliance kinds do. Run ``make gen``.

   The server checks every kind against this convention at start-up
   (``server/tasks/_kinds.py``) and refuses to start, naming what is missing. The one submit
   path (``TaskService.submit`` in ``server/tasks/_service.py``) serves the new RPC with the
   owner rule, project reach, the submit rate limit, idempotency on ``request_id`` and the
   ``agentic_task_submits_total{kind="<name>"}`` metric.

2. **``workers/<name>.py``**, the function::

       def run_<name>(spec: tasks_pb2.<Name>Spec, context: TaskContext) -> tasks_pb2.<Name>Result:
           for ...:
               context.raise_if_cancelled()          # cooperative cancellation
               ...                                    # the work
               context.report_progress(done / total, "what happens now")
           return tasks_pb2.<Name>Result(...)

   Raise ``PermanentError(message, reason=..., metadata=..., code=...)`` for failures a
   retry cannot fix (the task ends FAILED at once; ``reason`` and ``metadata`` become the
   ErrorInfo's, ``code`` the Status code: FAILED_PRECONDITION by default, INVALID_ARGUMENT
   when the spec itself is wrong), ``TransientError`` (or
   any type listed in the kind's ``RetryPolicy.transient``) for failures worth retrying
   with backoff. Any other exception is treated as a bug: FAILED, ``TASK_CRASHED``, the
   traceback in the worker log. The function may run more than once for one attempt if a
   worker dies mid-way (at-least-once), never twice at the same time; its result is
   recorded exactly once. Keep side effects idempotent.

   A kind that works on a document or dataset takes it as an
   `agentic.artifacts.v1.ArtifactRef` field of its spec (the caller sets `artifact_id`; the
   server fills in key, size and sha256 at submit) and reads it with
   `context.artifact_file(ref)` (a verified local copy) or `context.artifact_pieces(ref)`
   (streamed in place): see "How a worker reads an artifact" in the README.

3. **``workers/_registry.py``**, one entry in ``REGISTRY``::

       Registration(
           kind=tasks_pb2.TASK_KIND_<NAME>,
           spec_type=tasks_pb2.<Name>Spec,
           result_type=tasks_pb2.<Name>Result,
           run=run_<name>,
           limits=Limits(soft_seconds=..., hard_seconds=...),
           retry=RetryPolicy(max_retries=3, backoff_first_seconds=1, backoff_max_seconds=300),
       )

   The hard limit plus Celery's margin (30 s) must stay below the broker's
   ``consumer_timeout`` (``AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS``, RabbitMQ's default
   1800 s); workers refuse to start otherwise, and also when a ``TaskKind`` has no entry or
   its types do not match the ``Task`` oneof fields. A kind kept outside this repository
   registers in its own module instead, ``REGISTRATIONS = [Registration(...)]`` (importing
   ``Registration``, ``Limits``, ``TaskContext`` and the errors from ``workers``), named in
   ``AGENTIC_TASK_KIND_MODULES``.

4. **``server/access/_table.py``**, one entry: who may submit the kind,
   ``"/agentic.tasks.v1.TaskService/Submit<Name>": frozenset({...})``. Without it every
   caller is denied (deny by default) and ``tests/server/access/test_access_matrix.py`` fails. Then
   ``python -m server.access`` rewrites the README's roles table from the table.

5. **Tests**: in ``tests/server/access/test_access_matrix.py`` an action for ``Submit<Name>`` in
   ``ACTIONS`` and its name in ``CREATES`` (``test_every_rpc_has_an_action`` fails until then;
   the fuzz test picks the new RPC up by itself); the function's outcomes (result,
   permanent and transient failures, cancellation) through ``workers._execute.execute``, as
   ``tests/workers/test_execute.py`` does for the probe; and a round trip through real
   workers as in ``tests/workers/test_pipeline.py``.

6. **Docs**: the proto comments are the reference (``grpcurl describe`` shows them); there is
   no per-kind page in ``docs/``. README's roles table is regenerated in step 4.

Storage, idempotency, the outbox, watching, cancel, retry and the metrics need no change.
``tests/workers/test_kind_path.py`` walks this path with a throw-away kind (``TASK_KIND_ECHO``,
generated into a temporary directory) to prove that these steps make a working kind.
"""

from workers._context import PermanentError, TaskContext, TransientError, WorkSettings
from workers._outputs import Output
from workers._registry import Limits, Registration, RetryPolicy

__all__ = [
    "Limits",
    "Output",
    "PermanentError",
    "Registration",
    "RetryPolicy",
    "TaskContext",
    "TransientError",
    "WorkSettings",
]
