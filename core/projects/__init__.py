"""Projects in the database as the API message: the one read of a project by id that the
API server (GetProject's origin behind the ``projects`` cache namespace) and the cache
warming worker share, so both cache byte-identical values.

- ``load_project(engine_or_session, id)``: the ``Project`` message, or None.
- ``project_proto(row, member_ids)``: the row -> message mapping.
- ``etag_of(id, version)``: the opaque etag of a project version.
- ``members_of(session, ids)``: the member ids of projects, per project.
"""

from core.projects._rows import etag_of, load_project, members_of, project_proto

__all__ = ["etag_of", "load_project", "members_of", "project_proto"]
