"""The verify_artifact kind: re-read a stored artifact and check it against its record.

Object storage can lose or damage bytes (a bad disk, a wrong lifecycle rule, an operator's
mistake); this kind reads the artifact where it lies, in a stream, and compares size and
sha256 with what the upload verified. It is also the smallest example of a kind that takes
an artifact by reference (see ``TaskContext.artifact_pieces`` and ``artifact_file``).
"""

from __future__ import annotations

import hashlib

from agentic.tasks.v1 import tasks_pb2

from workers._context import PermanentError, TaskContext

# Progress at most this often (in bytes read), so a large artifact reports steadily
# without a database write per piece.
_REPORT_EVERY_BYTES = 64 * 1024 * 1024


def run_verify_artifact(
    spec: tasks_pb2.VerifyArtifactSpec, context: TaskContext
) -> tasks_pb2.VerifyArtifactResult:
    """Hash the referenced artifact's bytes; FAILED (``ARTIFACT_DAMAGED``) when they differ."""
    ref = spec.artifact
    digest = hashlib.sha256()
    size = 0
    reported = 0
    context.report_progress(0.0, f"reading {ref.size_bytes} bytes")
    for piece in context.artifact_pieces(ref):
        digest.update(piece)
        size += len(piece)
        if size - reported >= _REPORT_EVERY_BYTES:
            context.raise_if_cancelled()
            context.report_progress(size / max(ref.size_bytes, 1), f"read {size} bytes")
            reported = size
    if size != ref.size_bytes or digest.hexdigest() != ref.sha256:
        raise PermanentError(
            f"artifact {ref.artifact_id} is damaged: the store holds {size} bytes with sha256 "
            f"{digest.hexdigest()}, its upload recorded {ref.size_bytes} bytes with sha256 "
            f"{ref.sha256}; upload it again",
            reason="ARTIFACT_DAMAGED",
        )
    return tasks_pb2.VerifyArtifactResult(size_bytes=size, sha256=digest.hexdigest())
