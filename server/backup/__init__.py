"""``python -m server.backup``: the operator's command over the backup engine in
``core.backup`` (which the ``backup`` task kind runs too). The runbook is in
docs/operations.md."""
