"""How every long-running process (gateway, its workers, the upscale worker) logs.

One line per event. A terminal gets text; anything else (a file, a container's
log collector) gets JSON, so the fields can be searched:

    {"time": "2026-11-27T10:15:24.113Z", "level": "ERROR", "logger": "gateway.money.refunds",
     "message": "refund failed; an admin must act", "job_id": "job_x", "error": "..."}

Whatever a call passes in ``extra=`` (``job_id``, ``event_id``, ``session_id``,
``worker``, ``error`` ...) is part of the line, in both forms: a log line that
names a job says which. ``SMI_LOG_FORMAT=json`` or ``text`` chooses by hand.
JSON rather than logfmt: nested values and any character survive, and every
log collector reads it without a parser of its own.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from shared import settings

SERVICE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extras(record),
        }
        if record.exc_info:
            line["error_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual text, with the ``extra=`` fields after it as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(SERVICE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extras(record).items())
        if not fields:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} {fields}{newline}{rest}"


# Job ids as ``gateway.store.lifecycle.new_job_id`` makes them.
_JOB_ID = re.compile(r"(?<![\w-])job_[\w-]{22}(?![\w-])")


class JobIdFilter(logging.Filter):
    """A line that names a job in its text (an access log's path, a library's message)
    but not in its fields gets the ``job_id`` field too: a job's whole life is one search."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            found = _JOB_ID.search(record.getMessage())
            if found:
                record.job_id = found.group(0)
        return True


# A download link's token is a credential for days: no log line keeps it. Nor does one keep
# a presigned storage address's signature or credentials (a download's redirect).
_DOWNLOAD_TOKEN = re.compile(r"(/downloads/)[^/?#\s\"']+", re.IGNORECASE)
_PRESIGNED = re.compile(
    r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId"
    r"|x-amz-security-token)=)[^&\s\"']+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every download token replaced by ``[token]``, and a presigned
    address's signature and credentials by ``[redacted]``."""
    return _PRESIGNED.sub(r"\1[redacted]", _DOWNLOAD_TOKEN.sub(r"\1[token]", text))


def _secret_in(text: str) -> bool:
    return "/downloads/" in text.lower() or ("=" in text and _PRESIGNED.search(text) is not None)


class SecretsFilter(logging.Filter):
    """Download tokens and presigned addresses' signatures out of every line: the access
    log's path, a library's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and _secret_in(record.msg):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(arg) if isinstance(arg, str) and _secret_in(arg) else arg
                for arg in record.args
            )
        return True


class ProcessFields(logging.Filter):
    """Fields every line of this process carries (a worker's name), unless a line sets them."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def configure_service_logging(**fields: str) -> None:
    """INFO and above to stderr: text on a terminal, JSON lines otherwise.

    ``fields`` go on every line (``worker="gpu-3:12"``). uvicorn's own loggers
    (started with ``log_config=None``) come here too, so its access lines are
    JSON with the rest.
    """
    choice = settings.read("LOG_FORMAT").lower()
    as_json = choice == "json" or (choice != "text" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(SecretsFilter())
    handler.addFilter(JobIdFilter())
    if fields:
        handler.addFilter(ProcessFields(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
