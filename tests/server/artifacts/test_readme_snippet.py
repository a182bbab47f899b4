"""The README's "Uploading from Python, with resume" snippet works as printed.

The snippet is taken from README.md, run against a real server (with the channel swapped
for one that carries a token, as its last comment says), and its upload is checked by
reading the artifact back and hashing it independently.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from pathlib import Path
from typing import Any

from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb

from tests._support import REPO
from tests.conftest import Api
from tests.server.artifacts._bytestream import download


def _snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Uploading from Python, with resume", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "the README lost its upload snippet"
    code = match.group(1)
    # Everything up to the example channel: the functions a user copies.
    return code.split("channel = grpc.insecure_channel", 1)[0]


def test_the_readme_upload_snippet_uploads_and_resumes(api: Api, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_snippet(), "README.md snippet", "exec"), namespace)  # our own README
    stub = artifacts_pb2_grpc.ArtifactServiceStub(api.channel)
    project = api.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"readme-{uuid.uuid4().hex[:8]}")),
        timeout=10,
    ).project
    path = tmp_path / "export.csv"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 123))

    artifact_id = namespace["upload"](stub, project.id, str(path))

    artifact = stub.GetArtifact(pb.GetArtifactRequest(id=artifact_id), timeout=10).artifact
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert artifact.name == "export.csv"
    got = io.BytesIO()
    download(stub, artifact_id, got)
    assert (
        hashlib.sha256(got.getvalue()).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    )

    # Its request generator resumes from an offset: the tail of an upload cut after 1 MiB.
    created = stub.CreateUpload(
        pb.CreateUploadRequest(
            project_id=project.id,
            name="cut.csv",
            kind=pb.ARTIFACT_KIND_DATASET,
            format=pb.DATASET_FORMAT_CSV,
            size_bytes=path.stat().st_size,
        ),
        timeout=10,
    )
    head = namespace["requests"](str(path), created.upload_name, 0)
    first = next(head)
    assert not first.finish_write
    assert stub.Write(iter([first]), timeout=10).committed_size == len(first.data)
    stub.Write(namespace["requests"](str(path), created.upload_name, len(first.data)), timeout=10)
    status = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=10
    )
    assert status.complete
    assert status.committed_size == path.stat().st_size
