"""Signed, expiring download links: ``GET /downloads/{token}``.

    >>> links = DownloadLinks("secret", "https://shop.example", ttl_s=3600)
    >>> token, expires = links.issue("job_abc")
    >>> links.job_id(token)
    'job_abc'

A token is the job id signed with ``SMI_DOWNLOAD_SECRET`` and stamped with
the time it was issued (``itsdangerous``): a changed byte is refused
(403), an old one has expired (410). Links carry no database state, so a
fresh one can be issued on every status poll and in every email.

Rotation: the new secret signs, the ones before it (``previous``, from
``SMI_DOWNLOAD_SECRET_PREVIOUS``) still open the links they signed until
those expire (``SMI_DOWNLOAD_TTL_HOURS``); then they can be dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import (
    DownloadExpiredError,
    DownloadForbiddenError,
    ResultUnavailableError,
    StorageUnavailableError,
)
from gateway.store.lifecycle import UnknownJobError, audit_trail, get_job, record_audit
from gateway.store.tables import Job
from shared.jobs import JobStatus
from shared.models import scale_of
from shared.storage import Storage, StoredObject

log = logging.getLogger(__name__)

SALT = "smi-download-link"


class DownloadLinks:
    """Issues and checks download tokens for completed jobs."""

    def __init__(
        self, secret: str, public_url: str, ttl_s: int, previous: tuple[str, ...] = ()
    ) -> None:
        # itsdangerous signs with the last key and accepts any of them.
        self._serializer = URLSafeTimedSerializer([*previous, secret], salt=SALT)
        self.public_url = public_url.rstrip("/")
        self.ttl_s = ttl_s

    def issue(self, job_id: str) -> tuple[str, datetime]:
        """A token for ``job_id`` and the moment it stops working."""
        token = self._serializer.dumps(job_id)
        return token, datetime.now(UTC) + timedelta(seconds=self.ttl_s)

    def url(self, token: str) -> str:
        return f"{self.public_url}/downloads/{token}"

    def job_id(self, token: str) -> str:
        """The job of a token, or ``DownloadForbiddenError`` / ``DownloadExpiredError``."""
        if not _canonical(token):
            raise DownloadForbiddenError("this download link is not valid")
        try:
            value = self._serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired as exc:
            raise DownloadExpiredError("this download link has expired") from exc
        except BadSignature as exc:
            raise DownloadForbiddenError("this download link is not valid") from exc
        if not isinstance(value, str):
            raise DownloadForbiddenError("this download link is not valid")
        return value


def _canonical(token: str) -> bool:
    """Whether each base64 part of ``token`` is spelled the one way ``issue`` spells it.

    A part's last character carries bits no decoder reads: without this
    check one link would have several spellings that all download.
    """
    try:
        return all(base64_encode(base64_decode(part)).decode() == part for part in token.split("."))
    except (BadData, ValueError):  # not base64 at all
        return False


def new_buyer_key() -> tuple[str, str]:
    """A buyer's key and the hash the job keeps of it.

    The key is handed once, to the browser that starts the checkout, and is
    the proof the shop's page shows to get the download link: no public
    answer, log line, email or Stripe object carries it (a Checkout Session
    id does: it is in the checkout address, in Stripe's Dashboard and in
    the seller's notices, so it proves nothing).
    """
    key = secrets.token_urlsafe(32)
    return key, buyer_key_hash(key)


def buyer_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def holds_buyer_key(stored_hash: str | None, key: str | None) -> bool:
    """Whether ``key`` is the buyer's key whose hash the job keeps (constant time)."""
    if not stored_hash or not key:
        return False
    return hmac.compare_digest(buyer_key_hash(key), stored_hash)


@dataclass(frozen=True)
class Download:
    """What a valid link opens: a stored result checked against what its worker reported,
    its size, the name to save it under and its validators."""

    job_id: str
    key: str
    size: int
    filename: str
    etag: str  # strong, quoted: the result's sha256 where known
    modified: float | None = None
    store_etag: str | None = None  # the store's own (S3's), for answers the store sends

    @property
    def suffix(self) -> str:
        return self.key.rsplit(".", 1)[-1]


UNAVAILABLE = (
    "this image cannot be delivered right now: its stored copy is missing or damaged. "
    "We have been told; please contact support"
)


def open_download(
    sessions: sessionmaker[Session], storage: Storage, links: DownloadLinks, token: str
) -> Download:
    """The result a token opens: 403 for a bad token, 410 once it is gone or expired, 409
    when the stored result is missing or is not what the worker reported (recorded in the
    job's audit trail for the admin; nothing is sent)."""
    job_id = links.job_id(token)
    with sessions() as session:
        try:
            job = get_job(session, job_id)
        except UnknownJobError as exc:
            raise DownloadForbiddenError("this download link is not valid") from exc
    if job.status != JobStatus.COMPLETED or not job.result_key or job.result_deleted_at:
        raise DownloadExpiredError("this download is no longer available")
    try:
        found = storage.stat(job.result_key)
        problem = _mismatch(storage, job, found)
    except FileNotFoundError:
        _report(sessions, job.id, "the stored result is missing")
        raise ResultUnavailableError(UNAVAILABLE) from None
    except OSError as exc:
        log.error("storage does not answer: %s", exc, extra={"job_id": job.id})
        raise StorageUnavailableError("downloads are unavailable for a moment; try again") from exc
    if problem:
        _report(sessions, job.id, problem)
        raise ResultUnavailableError(UNAVAILABLE)
    suffix = job.result_key.rsplit(".", 1)[-1]
    if job.result_sha256:
        etag = f'"{job.result_sha256}"'
    else:  # a result stored before digests were reported: its size and time
        etag = f'"{found.size:x}-{int((found.modified or 0) * 1000):x}"'
    return Download(
        job.id,
        job.result_key,
        found.size,
        f"{job.id}-{job.model}-{scale_of(job.model)}x.{suffix}",
        etag,
        found.modified,
        found.etag,
    )


def _mismatch(storage: Storage, job: Job, found: StoredObject) -> str | None:
    """How the stored result differs from what its worker reported; ``None`` if it does not
    (or nothing was reported: a result from a worker older than the check)."""
    assert job.result_key is not None
    if job.result_size is not None and found.size != job.result_size:
        return f"the stored result has {found.size} bytes, not the {job.result_size} reported"
    if job.result_sha256:
        digest = storage.sha256(job.result_key, found)
        if digest != job.result_sha256:
            return (
                f"the stored result's sha256 is {digest[:16]}..., "
                f"not {job.result_sha256[:16]}... as reported"
            )
    return None


def _report(sessions: sessionmaker[Session], job_id: str, problem: str) -> None:
    """Log the problem and put it in the job's audit trail (once, not at every try)."""
    log.error("download refused: %s", problem, extra={"job_id": job_id})
    reason = f"download refused: {problem}"
    with sessions.begin() as session:
        job = get_job(session, job_id, lock=True)
        trail = audit_trail(session, job_id)
        if not trail or trail[-1].reason != reason:
            record_audit(session, job, reason, "downloads")
