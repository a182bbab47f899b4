"""Reading a process's Prometheus ``/metrics`` in tests: the text, and one sample of it."""

from __future__ import annotations

import re
import urllib.request

__all__ = ["metric", "metrics_text"]

SCRAPE_TIMEOUT_SECONDS = 5.0


def metrics_text(port: int) -> str:
    """The exposition text of ``http://127.0.0.1:<port>/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
        return str(response.read().decode())


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the first sample of ``name`` whose labels include ``labels`` (0 when
    there is none); a sample without labels is matched by ``metric(text, name)``."""
    for line in text.splitlines():
        if line.startswith(name + " ") and not labels:
            return float(line.rsplit(" ", 1)[1])
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
