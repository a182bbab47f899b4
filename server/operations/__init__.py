"""google.longrunning.Operations (AIP-151) over the task store: ``operations/<task id>``.

Generic LRO clients (google-api-core's operation helpers, Go's ``longrunning`` package)
wait on tasks through it without knowing TaskService; see ``_service`` for how each
method maps to a TaskService RPC and ``_wire`` for the Operation of a Task.
"""

from server.operations._service import MAX_WAIT_SECONDS, OperationsService
from server.operations._wire import operation_name, operation_of, task_id_of

__all__ = ["MAX_WAIT_SECONDS", "OperationsService", "operation_name", "operation_of", "task_id_of"]
