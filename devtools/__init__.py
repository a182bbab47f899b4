"""Development and test tooling: never imported by the product packages.

What ``make run``, ``make dev-ca``, the tests and the benchmarks need and production does
not: a private RabbitMQ node and a broker probe (:mod:`devtools.broker`), a private
memcached (:mod:`devtools.memcached`), a private S3-protocol server (moto,
:mod:`devtools.s3`), free loopback ports (:mod:`devtools.ports`), a
development CA (:mod:`devtools.devca`), development signing keys and tokens
(:mod:`devtools.devkeys`) and the local stack itself (:mod:`devtools.devstack`).

Layering: this package may import ``core``, ``server``, ``cache_sidecar`` and ``workers``;
none of them may import it.
"""
