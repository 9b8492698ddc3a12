"""A local S3-compatible server for tests and benchmarks: moto's standalone server.

    with local_s3() as s3:
        s3.bucket                 # made at start, one per server
        s3.storage_url("run-1")   # s3://BUCKET/run-1
        s3.env                    # what points s3fs (and so SMI_STORAGE_URL) at it
        s3.requests()             # the requests it has served, from its access log

``moto_server`` (``moto[server]``, a development dependency) runs as a
subprocess on a free loopback port, so the code under test speaks real HTTP
to it through s3fs and botocore exactly as to AWS or MinIO. Without moto the
server cannot start: ``S3ServerUnavailable``, never a silent skip.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fsspec.config

ACCESS_KEY = "smi-local-key"
SECRET_KEY = "smi-local-secret"
REGION = "us-east-1"
# werkzeug's access log: 127.0.0.1 - - [date] "GET /bucket/key?query HTTP/1.1" 200 -
# (some coloured with terminal escapes).
_REQUEST = re.compile(r'"(?:\x1b\[[\d;]*m)*([A-Z]+) (\S+) HTTP/[\d.]+(?:\x1b\[[\d;]*m)*" (\d{3})')


class S3ServerUnavailable(RuntimeError):
    """Raised when the local S3 server cannot be started (moto[server] missing, no answer)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with its query string
    status: int


@dataclass
class LocalS3:
    endpoint: str
    bucket: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """Settings that point s3fs at this server, for processes started with them."""
        return {
            "FSSPEC_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def storage_url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def use_in_this_process(self) -> None:
        """Point this process's s3fs at the server too (fsspec reads its environment once,
        when imported: later filesystems take their settings from ``fsspec.config.conf``)."""
        os.environ.update(self.env)
        fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = self.endpoint

    def requests(self, settle_s: float = 0.0) -> list[Request]:
        """Every request served so far, oldest first; with ``settle_s``, once the log has
        had no new line for that long (a request is logged after its answer is sent)."""
        text = self.log.read_text(errors="replace")
        while settle_s:
            time.sleep(settle_s)
            again = self.log.read_text(errors="replace")
            if again == text:
                break
            text = again
        return [Request(m[1], m[2], int(m[3])) for m in _REQUEST.finditer(text)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def local_s3(
    log_dir: Path,
    bucket: str | None = None,
    timeout_s: float = 30.0,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wrap: Sequence[str] = (),
) -> Iterator[LocalS3]:
    """moto's server on a free loopback port with one empty bucket; stopped afterwards.

    ``host`` and ``port`` put it elsewhere (a test network's host); ``wrap`` goes before
    its command (``ip netns exec NAME``, to run it in that host's namespace).
    """
    command = Path(sys.executable).parent / "moto_server"
    if not command.is_file():
        raise S3ServerUnavailable(
            f"{command} is missing: install the development extra (pip install -e '.[dev]', "
            "which brings moto[server])"
        )
    port = port or _free_port()
    endpoint = f"http://{host}:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"s3-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*wrap, str(command), "-H", host, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise S3ServerUnavailable(
                    f"moto_server did not start on {endpoint}: {log.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        server = LocalS3(endpoint, bucket or f"smi-{secrets.token_hex(4)}", log, process)
        import s3fs  # the s3 extra, part of the development one

        fs = s3fs.S3FileSystem(
            endpoint_url=endpoint,
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            skip_instance_cache=True,
        )
        fs.mkdir(server.bucket)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
