"""The shared core below the three processes (API server, cache sidecar, workers).

``core`` holds what more than one process needs: the gRPC plumbing (``core.rpc``), TLS
credentials (``core.tls``), the incoming deadline (``core.deadline``), configuration
parsing (``core.config``), the database layer (``core.db``), domain events and their
outbox (``core.events``), the typed cache-sidecar client (``core.cache``), the task data
the workers share with the server (``core.tasks``) and how a process serves: its ready
file, dependency health, metrics endpoint and stop signal (``core.serving``). It imports
none of ``server``, ``cache_sidecar`` or ``workers``; each of those imports only
``core`` and itself (``make lint`` checks this with import-linter).
"""
