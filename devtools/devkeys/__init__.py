"""Development signing keys and the tokens minted with them (``python -m devtools.devkeys``).

For ``make run``, the README, docker compose and the tests. Production tokens come from a
real identity provider; the API server only ever verifies (``server.auth``).
"""

from devtools.devkeys._keys import DEV_AUDIENCE, DEV_ISSUER, DevKeys, public_jwk

__all__ = ["DEV_AUDIENCE", "DEV_ISSUER", "DevKeys", "public_jwk"]
