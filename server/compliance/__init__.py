"""Rule sets: storage, cached reads and invalidating writes, and the RuleSetService servicer.

The rule sets themselves (the built-in data, the row <-> message mapping, the read the
compliance worker shares) are ``core.compliance``'s.
"""

from server.compliance._facade import RuleSets
from server.compliance._service import RuleSetService
from server.compliance._store import Page, RuleSetStore, rule_set_not_found

__all__ = ["Page", "RuleSetService", "RuleSetStore", "RuleSets", "rule_set_not_found"]
