# One image for every agentic-backend process (API server, cache sidecar, worker);
# docker-compose.yml picks the process with `command`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app:/app/build/gen

# memcached runs from this image too (compose), bound to loopback with UDP off. Pango, its
# FreeType backend, HarfBuzz's subsetter and a font are what WeasyPrint needs for the
# compliance report's PDF; postgresql-client's pg_dump and pg_restore are what
# `python -m server.backup` runs for PostgreSQL (the Makefile's SYSTEM_PACKAGES, the same list).
RUN apt-get update && apt-get install -y --no-install-recommends memcached \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY protos ./protos
RUN python protos/codegen.py
# The shared core (STYLE.md 13): every process imports it.
COPY core ./core
COPY server ./server
COPY cache_sidecar ./cache_sidecar
COPY workers ./workers
# Development tooling, for compose only: `python -m devtools.devkeys ensure` mints the dev
# keys on first start. Nothing in server, cache_sidecar or workers imports it.
COPY devtools ./devtools

# /keys exists (owned by agentic) so that compose's named volume mounted there is created
# writable for the dev keys: Docker seeds a new volume with the image's directory and owner.
# /run/agentic holds the cache sidecar's socket: a new named volume mounted there takes this
# directory's owner and mode, so only the service's user can reach the sidecar.
RUN useradd --system --uid 10001 agentic && mkdir -p /app/var /keys /run/agentic \
    && chown agentic /app/var /keys /run/agentic && chmod 700 /run/agentic
USER agentic

EXPOSE 50051 9464 9465
CMD ["python", "-m", "server"]
