"""Errors the gateway raises on purpose; ``gateway.http.errors`` answers each over HTTP.

GatewayError                        (500) only if something forgot to be specific
├── RequestError                    (400) malformed JSON, missing or wrong fields
│   ├── PayloadTooLargeError        (413) a body over the limit
│   ├── UnstorableTextError         (400) a NUL or unpaired surrogate in a path, query or body
│   └── SourceImageError            (422) the image URL or its bytes cannot be sold
├── NotFoundError                   (404) no such job (or a job id nobody may see)
├── ConflictError                   (409) the job's state does not allow it (admin actions)
│   └── ResultUnavailableError      (409) a completed job's stored result is missing or damaged
├── UnauthorizedError               (401) admin API or /metrics without the right bearer token
├── NotPermittedError               (403) a dashboard account whose role does not allow it
├── CrossSiteRequestError           (403) a dashboard change without its form token or origin
├── DownloadForbiddenError          (403) a download token that was changed or made up
├── DownloadExpiredError            (410) a download token past its lifetime
├── WebhookSignatureError           (400) missing, wrong or stale Stripe-Signature
├── PaymentProviderUnavailable      (503) Stripe rate limits or network: try later
├── StorageFullError                (503) the disk is nearly full: no new work until it is not
├── StorageUnavailableError         (503) storage does not answer (a download): try later
├── EventTooEarlyError              (503) a refund or dispute event before its payment's
└── PaymentProviderRejected         (502) Stripe refused the request as invalid
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class RequestError(GatewayError):
    """Raised when a request body or parameter is malformed."""


class PayloadTooLargeError(RequestError):
    """Raised when a request body exceeds the size limit."""


class UnstorableTextError(RequestError):
    """Raised when a path, query or JSON string holds a character no database column can
    store (NUL, an unpaired surrogate): refused before any lookup or write."""


class UnsupportedMediaTypeError(RequestError):
    """Raised when a JSON endpoint gets a body without ``Content-Type: application/json``."""


class SourceImageError(RequestError):
    """Raised when the image to sell is off the allowed hosts, unreachable, or not an image."""


class RateLimitedError(GatewayError):
    """Raised when a client, or everyone together, starts checkouts faster than allowed."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFoundError(GatewayError):
    """Raised when a job id matches no job."""


class ConflictError(GatewayError):
    """Raised when an admin action does not fit the job's current status."""


class ResultUnavailableError(ConflictError):
    """Raised when a completed job's result is missing from storage or does not match the
    size and sha256 its worker reported: nothing is sent, the job's audit trail says why."""


class UnauthorizedError(GatewayError):
    """Raised when an admin (or metrics) request lacks the configured bearer token."""

    def __init__(self, message: str, realm: str = "smi-admin") -> None:
        super().__init__(message)
        self.realm = realm


class NotPermittedError(GatewayError):
    """Raised when a signed-in dashboard account's role does not allow an action (a support
    account's refund over its limit, an erasure, the settings)."""


class CrossSiteRequestError(GatewayError):
    """Raised when a dashboard request could be another site's doing: a change without the
    session's form token or from another origin, or a read asked for by another origin."""


class DownloadForbiddenError(GatewayError):
    """Raised when a download token's signature does not match (tampered or made up)."""


class DownloadExpiredError(GatewayError):
    """Raised when a download token is older than the configured lifetime."""


class WebhookSignatureError(GatewayError):
    """Raised when a webhook's Stripe-Signature is missing, wrong or too old."""


class PaymentProviderUnavailable(GatewayError):
    """Raised when Stripe is rate limiting or unreachable after the SDK's retries."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageFullError(GatewayError):
    """Raised, before anything is fetched or written, when the disk that images or the
    database go to has less free space than ``SMI_MIN_FREE_MB``."""

    retry_after_s = 60


class StorageUnavailableError(GatewayError):
    """Raised when storage does not answer while a download is opened (its error is logged)."""

    retry_after_s = 30


class EventTooEarlyError(GatewayError):
    """Raised when a Stripe event about a payment (a refund, a dispute) arrives before the
    payment itself is recorded: Stripe delivers it again later, by then in order."""

    retry_after_s = 30


class PaymentProviderRejected(GatewayError):
    """Raised when Stripe refuses a request as invalid (a bug or a configuration problem)."""
