"""The ready file: how a process tells its supervisor (``make run``, the tests) it is serving."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_ready_file(path: str | Path, **fields: object) -> None:
    """Write ``fields`` as a JSON object to ``path``, atomically.

    The JSON goes to a temporary file in the same directory first, then ``os.replace``
    puts it in place: a reader that polls for ``path`` sees nothing or the whole object,
    never half of it. The temporary name is unique, so two writers cannot interleave.
    """
    target = Path(path)
    descriptor, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(fields, file)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
