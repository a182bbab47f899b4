"""A private S3-protocol server on loopback: moto's standalone server, for tests, dev and bench.

The ``s3://`` object store (``core.objects._s3``) is tested against a real server process
speaking the S3 protocol over HTTP, not against an in-process mock: the bytes cross a
socket, botocore's retries, timeouts and streaming bodies run as in production, and a test
can kill the server (-9) to see what a client makes of an outage. moto's server
(``python -m moto.server``) is the one installable here; docker-compose runs MinIO instead.

Always bound to 127.0.0.1 (moto checks no credentials: anyone who reaches it may read and
write everything). Readiness is an HTTP answer on the port, checked only after the port was
found bindable, so the answer cannot come from another server. The server's output goes to
a log file, which a failed start quotes.

Like ``devtools.memcached``, hand-written over ``subprocess.Popen``: a restart on the same
port and SIGKILL are what the fault tests need, and nothing in moto's memory is worth a
graceful stop.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from devtools._wait import wait_until
from devtools.ports import free_port, port_bindable

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["S3Server", "S3ServerError"]

# moto accepts any credentials; these only have to be present, or botocore refuses to sign.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


class S3ServerError(RuntimeError):
    """moto is missing, the port is taken, or the server exited or stayed silent while starting."""


class S3Server:
    """One moto server on a loopback port (a free one unless given); ``start`` again restarts it.

    ``with S3Server() as s3:`` starts it and stops it at the end of the block.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = free_port() if port is None else port
        self.log_path = log_path
        """Where its output goes (appended); None: a temporary file, removed by ``stop``."""
        self._own_log = log_path is None
        self.process: subprocess.Popen[bytes] | None = None
        self._client: S3Client | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's URL, for ``AWS_ENDPOINT_URL`` or a client's ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return None if self.process is None or self.process.poll() is not None else self.process.pid

    def env(self) -> dict[str, str]:
        """The AWS variables that point a boto3 client (or a whole process) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        """Start (or restart) on this port and wait until it answers HTTP."""
        # Checked first: another server on the port would answer our readiness probe while
        # this one fails to bind and exits.
        if not port_bindable(self.port):
            raise S3ServerError(f"port {self.port} is taken")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="moto-s3-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until(
                self._answers,
                timeout_seconds=timeout_seconds,
                what=f"moto's S3 server on port {self.port} to answer",
                error=S3ServerError,
            )
        except S3ServerError as exc:
            self.kill()
            raise S3ServerError(f"{exc}\n{self.log()}") from None
        except BaseException:
            self.kill()
            raise

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise S3ServerError(f"moto's S3 server exited with {self.process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
        except OSError:  # refused while it imports, or a reset while it binds
            return False
        finally:
            connection.close()
        return True

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def client(self) -> S3Client:
        """A boto3 S3 client for this server, independent of the environment.

        One client, made on first use (building one costs about 0.1 s) and closed by
        ``stop``; boto3 clients are thread-safe.
        """
        if self._client is None:
            # Imported here: a devtools user that never talks S3 should not pay for boto3.
            import boto3

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET_ACCESS_KEY,
                region_name=REGION,
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (an existing one of ours is fine)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def kill(self) -> None:
        """kill -9: the server vanishes with every bucket and object it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop for good (SIGKILL: it keeps everything in memory, nothing to flush) and remove
        the temporary log, if it made one."""
        self.kill()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> S3Server:
        if self.pid is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
