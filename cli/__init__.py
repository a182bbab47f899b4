"""``agentic``: the command-line client of the API server, built on the generated stubs.

Run it as ``python -m cli`` (or ``.venv/bin/agentic``). The layers, top down::

    _app          argparse tree, dispatch, exit codes (the only place that exits)
    _projects, _artifacts, _tasks, _admin
                  one module per service: a command is a function (Session, args) -> int
    _render       per-kind result tables and the generic message table
    _session      connection (address, token, TLS), per-call deadline, output mode
    _errors       exit codes and the one place a grpc.RpcError becomes text

It imports the generated stubs, grpc and rich, and from ``core`` only pure helpers (the
backoff policy, TLS credentials from PEM files); never ``server`` or ``workers``.
"""

from cli._app import main
from cli._errors import ExitCode

__all__ = ["ExitCode", "main"]
