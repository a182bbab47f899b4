"""A local development CA with certificates for the API server, the sidecar and the server's
client identity towards the sidecar (``python -m devtools.devca``, ``make dev-ca``).

Production certificates come from a real CA; the product loads either kind through
``core.tls`` and the same *_FILE settings.
"""

from devtools.devca._ca import DevCa, ensure_dev_ca

__all__ = ["DevCa", "ensure_dev_ca"]
