"""A TaskContext stand-in for running a worker's DuckDB statements outside a task."""

from __future__ import annotations

from workers._context import WorkSettings

__all__ = ["QuietContext"]


class QuietContext:
    """The TaskContext surface ``workers._duckdb.Engine`` uses: never cancelled, and
    progress goes nowhere (the statements are timed or checked, not reported)."""

    def __init__(self, task_id: str, memory_limit_mib: int, threads: int) -> None:
        self.task_id = task_id
        self.work = WorkSettings(memory_limit_mib, threads, "")

    def cancelled(self) -> bool:
        return False

    def report_progress(self, fraction: float, message: str) -> None:
        pass

    def raise_if_cancelled(self) -> None:
        pass
