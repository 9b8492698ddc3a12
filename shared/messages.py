"""Messages between the gateway and the upscaler workers, as versioned JSON.

    >>> request = UpscaleRequest(job_id="j_1", source_key="jobs/j_1/source.png",
    ...                          result_key="jobs/j_1/result.png")
    >>> UpscaleRequest.from_json(request.to_json()) == request
    True

Bodies are plain JSON objects with a ``schema`` field naming the message
type and version; never pickle. ``from_json`` refuses anything else with a
``MessageError``, which consumers treat as undeliverable (dead-letter it,
do not retry it).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Self

_SHA256 = re.compile(r"[0-9a-f]{64}")


class MessageError(ValueError):
    """Raised when a message body is not valid JSON of the expected schema and version."""


class EventKind(StrEnum):
    """What a worker reports about a job."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class _Message:
    SCHEMA: ClassVar[str] = ""

    def to_json(self) -> str:
        return json.dumps({"schema": self.SCHEMA, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str | bytes | dict[str, Any]) -> Self:
        """Parse and validate a body; raise ``MessageError`` if it is not this message."""
        try:
            data = json.loads(body) if isinstance(body, str | bytes) else dict(body)
        except (ValueError, TypeError) as exc:
            raise MessageError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise MessageError("message body is not a JSON object")
        schema = data.pop("schema", None)
        if schema != cls.SCHEMA:
            raise MessageError(f"expected schema {cls.SCHEMA!r}, got {schema!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise MessageError(f"unknown fields {sorted(unknown)} in {cls.SCHEMA}")
        try:
            message = cls(**data)
        except TypeError as exc:
            raise MessageError(f"{cls.SCHEMA}: {exc}") from exc
        message.validate()
        return message

    def validate(self) -> None:
        """Raise ``MessageError`` if a field has the wrong type or an impossible value."""
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _TYPES.get(str(f.type))
            if expected is not None and not isinstance(value, expected):
                raise MessageError(f"{self.SCHEMA}.{f.name} must be {f.type}, got {value!r}")
            if isinstance(value, bool) and expected is not None and str(f.type) != "bool":
                raise MessageError(f"{self.SCHEMA}.{f.name} must be {f.type}, got {value!r}")


_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str | None": (str, type(None)),
    "int | None": (int, type(None)),
    "float | None": (int, float, type(None)),
    "dict[str, Any]": dict,
}


@dataclass(frozen=True)
class UpscaleRequest(_Message):
    """A paid job for a worker: read ``source_key``, write ``result_key`` in storage."""

    SCHEMA: ClassVar[str] = "smi.upscale-request.v1"

    job_id: str
    source_key: str
    result_key: str
    model: str = "RealESRGAN_x4plus"
    attempt: int = 1

    def validate(self) -> None:
        super().validate()
        if not self.job_id or not self.source_key or not self.result_key:
            raise MessageError("job_id, source_key and result_key must not be empty")
        if self.attempt < 1:
            raise MessageError(f"attempt must be >= 1, got {self.attempt}")


@dataclass(frozen=True)
class PreviewRequest(_Message):
    """A free preview: upscale one square of a stored source, store it beside its bicubic twin.

    No job and no money: the worker writes ``{prefix}/before.png`` (bicubic)
    and then ``{prefix}/after.png`` (the model); the gateway polls storage.
    """

    SCHEMA: ClassVar[str] = "smi.preview-request.v1"

    preview_id: str
    source_key: str
    prefix: str
    model: str
    x: int
    y: int
    size: int

    def validate(self) -> None:
        super().validate()
        if not self.preview_id or not self.source_key or not self.prefix:
            raise MessageError("preview_id, source_key and prefix must not be empty")
        if self.x < 0 or self.y < 0 or not 1 <= self.size <= 1024:
            raise MessageError(f"bad crop {self.x},{self.y} size {self.size}")


@dataclass(frozen=True)
class JobEvent(_Message):
    """What a worker reports: started, progress (0..1), completed or failed.

    A ``completed`` event names the stored result (``result_key``) and, from
    workers that know them, its size in bytes and sha256 (``result_size``,
    ``result_sha256``): the gateway records them on the job and checks the
    stored object against them when it serves the download. Both are optional:
    an event from an older worker still completes its job, unchecked. (A
    gateway older than these fields refuses events that carry them: roll the
    gateways out before the workers.)
    """

    SCHEMA: ClassVar[str] = "smi.job-event.v1"

    job_id: str
    kind: str
    event_id: str
    worker: str = ""
    progress: float | None = None
    result_key: str | None = None
    error: str | None = None
    retryable: bool = False
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    result_size: int | None = None
    result_sha256: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.kind not in set(EventKind):
            raise MessageError(f"unknown event kind {self.kind!r}")
        if self.progress is not None and not 0 <= self.progress <= 1:
            raise MessageError(f"progress must be within 0..1, got {self.progress}")
        if self.kind == EventKind.COMPLETED and not self.result_key:
            raise MessageError("a completed event needs its result_key")
        if self.kind == EventKind.FAILED and not self.error:
            raise MessageError("a failed event needs an error")
        if self.result_size is not None and self.result_size < 0:
            raise MessageError(f"result_size must be >= 0, got {self.result_size}")
        if self.result_sha256 is not None and not _SHA256.fullmatch(self.result_sha256):
            raise MessageError(f"result_sha256 must be 64 hex digits, got {self.result_sha256!r}")
