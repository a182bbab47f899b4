"""``python -m bench`` (``make bench``): the read path measured beside its raw parts.

One run starts every process it needs on 127.0.0.1 (memcached, the cache sidecar, two API
servers, a bare two-hop gRPC chain), measures latency and throughput of:

* a GetProject cache hit (client -> API server -> sidecar -> memcached),
* the bare chain of the same hops without logic (``bench._bare``),
* a direct pymemcache get of a value of the same size,
* an uncached GetProject read from PostgreSQL,

then a cache stampede (500 concurrent GetProject calls of a cold key, several rounds),
and then the task pipeline (``bench._tasks``, on a temporary RabbitMQ vhost): Submit
against a raw confirmed Celery publisher, a no-op task against a raw Celery drain, event
latency with 1,000 WatchTask streams, and a watcher reconnect storm. It prints tables with
the targets as PASS/FAIL and rewrites ``docs/benchmarks.md``.
Targets are reported, not asserted: the exit status is non-zero only on a crash.
"""
