"""Compliance rule sets, shared by the API server (RuleSetService) and the compliance worker.

- ``builtin_rule_sets()`` / ``BUILTIN_IDS``: the read-only sets shipped as data in this
  package (``aspice-3.1``: the Automotive SPICE 3.1 PAM's output work products per
  process), checked against the proto's rules when first read.
- ``load_rule_set(engine_or_session, id)``: one rule set, built-in or custom (the
  ``rule_sets`` table): the origin behind GetRuleSet and the worker's read through the
  cache (namespace ``rule_sets``, key = the id; built-in sets need no cache).
- ``to_proto`` / ``encode_processes`` / ``decode_processes`` / ``etag_of``: the row <->
  message mapping the server's store writes with.
"""

from core.compliance._builtin import (
    ASPICE_3_1,
    BUILTIN_IDS,
    BuiltinRuleSetError,
    builtin_rule_sets,
    violations,
)
from core.compliance._rows import (
    decode_processes,
    encode_processes,
    etag_of,
    load_rule_set,
    to_proto,
)

__all__ = [
    "ASPICE_3_1",
    "BUILTIN_IDS",
    "BuiltinRuleSetError",
    "builtin_rule_sets",
    "decode_processes",
    "encode_processes",
    "etag_of",
    "load_rule_set",
    "to_proto",
    "violations",
]
