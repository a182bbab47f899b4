"""Authentication: RS256 bearer tokens verified against a JWKS, and the resulting principal.

Production wiring: ``TokenVerifier(JwksKeySet.load(source), issuer=..., audience=...)``.
``DevKeys`` (and ``python -m server.auth``) make a local key pair and mint tokens for
``make run``, the README and the tests.
"""

from server.auth._dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from server.auth._keys import JwksError, JwksKeySet
from server.auth._principal import Principal, Role, roles_from_claim
from server.auth._verify import TokenVerifier

__all__ = [
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "DevKeys",
    "JwksError",
    "JwksKeySet",
    "Principal",
    "Role",
    "TokenVerifier",
    "roles_from_claim",
]
