"""Celery workers of the task pipeline (``agentic.tasks.v1``).

Run one with ``python -m workers`` (prefork pool, settings from ``AGENTIC_*`` variables,
see ``workers._config.WorkerConfig``) or ``celery -A workers.app worker``. The database is
the source of truth for every task; a message only says "run attempt N of task T".

Adding a task kind
==================

A kind is three things: its proto messages, a function, and one registry entry.

1. **Proto** (``protos/agentic/tasks/v1/tasks.proto``): add ``TASK_KIND_<NAME>`` to
   ``TaskKind``; a ``<Name>Spec`` and a ``<Name>Result`` message with protovalidate rules;
   ``<Name>Spec <name> = 2x;`` in ``Task``'s ``oneof spec`` and
   ``<Name>Result <name>_result = 3x;`` in its ``oneof outcome`` (the server finds them by
   this naming convention, ``server.tasks.kind_fields``); and an RPC
   ``Submit<Name>(Submit<Name>Request) returns (Submit<Name>Response)`` whose request
   carries ``request_id``, ``owner_id``, ``priority`` and the spec, like
   ``SubmitProbeRequest``. Run ``make gen``.

2. **Function** (``workers/<name>.py``)::

       def run_<name>(spec: tasks_pb2.<Name>Spec, context: TaskContext) -> tasks_pb2.<Name>Result:
           for ...:
               context.raise_if_cancelled()          # cooperative cancellation
               ...                                    # the work
               context.report_progress(done / total, "what happens now")
           return tasks_pb2.<Name>Result(...)

   Raise ``PermanentError(message, reason=...)`` for failures a retry cannot fix (the task
   ends FAILED at once, ``reason`` becomes the ErrorInfo reason), ``TransientError`` (or
   any type listed in the kind's ``RetryPolicy.transient``) for failures worth retrying
   with backoff. Any other exception is treated as a bug: FAILED, ``TASK_CRASHED``, the
   traceback in the worker log. The function may run more than once for one attempt if a
   worker dies mid-way (at-least-once), never twice at the same time; its result is
   recorded exactly once. Keep side effects idempotent.

3. **Registration** (``workers/_registry.py``), one entry in ``REGISTRY``::

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
   its types do not match the ``Task`` oneof fields.

Then add the servicer method, one call in ``server/tasks/_service.py``::

    async def Submit<Name>(self, request, context):
        task = await self._tasks.submit(kind=tasks_pb2.TASK_KIND_<NAME>, spec=request.<name>,
                                         request=request, owner_id=request.owner_id,
                                         priority=request.priority, request_id=request.request_id)
        return tasks_pb2.Submit<Name>Response(task=task)

Storage, idempotency, the outbox, watching, cancel and retry need no change.
"""
