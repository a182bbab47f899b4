"""Authentication: RS256 bearer tokens verified against a JWKS, and the resulting principal.

Production wiring: ``TokenVerifier(JwksKeySet.load(source), issuer=..., audience=...)``.
Development keys and tokens (``make run``, the README, the tests) are minted by the
development tooling, outside the product: this package only ever verifies.
"""

from server.auth._keys import JwksError, JwksKeySet
from server.auth._principal import Principal, Role, roles_from_claim
from server.auth._verify import TokenVerifier

__all__ = [
    "JwksError",
    "JwksKeySet",
    "Principal",
    "Role",
    "TokenVerifier",
    "roles_from_claim",
]
