"""Tasks on the API server: durable submits, reads, streams, the relay, the TaskService.

The task data the workers share (records, event log, attempts, outbox, topology) is in
``core.tasks``; see ``workers`` for how tasks run and how to add a kind.
"""

from server.tasks._facade import Tasks, request_hash
from server.tasks._service import TaskService
from server.tasks._store import TaskStore

__all__ = ["TaskService", "TaskStore", "Tasks", "request_hash"]
