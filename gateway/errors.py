"""Errors the gateway raises on purpose, each with the HTTP answer it becomes.

    GatewayError                        500 only if something forgot to be specific
    ├── RequestError                    400  malformed JSON, missing or wrong fields
    │   ├── PayloadTooLargeError        413  a body over the limit
    │   └── SourceImageError            422  the image URL or its bytes cannot be sold
    ├── NotFoundError                   404  no such job (or a job id nobody may see)
    ├── ConflictError                   409  the job's state does not allow it (admin actions)
    ├── UnauthorizedError               401  admin API without the right bearer token
    ├── DownloadForbiddenError          403  a download token that was changed or made up
    ├── DownloadExpiredError            410  a download token past its lifetime
    ├── WebhookSignatureError           400  missing, wrong or stale Stripe-Signature
    ├── PaymentProviderUnavailable      503  Stripe rate limits or network: try later
    └── PaymentProviderRejected         502  Stripe refused the request as invalid

``error_response`` turns any of them into ``{"error": {"type", "message"}}``
with the right status, in one place; nothing else answers with a trace.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class GatewayError(Exception):
    """Base class; ``status`` and ``kind`` say how it is answered."""

    status = 500
    kind = "internal_error"

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(GatewayError):
    """Raised when a request body or parameter is malformed."""

    status = 400
    kind = "invalid_request"


class PayloadTooLargeError(RequestError):
    """Raised when a request body exceeds the size limit."""

    status = 413
    kind = "payload_too_large"


class SourceImageError(RequestError):
    """Raised when the image to sell is off the allowed hosts, unreachable, or not an image."""

    status = 422
    kind = "unusable_image"


class NotFoundError(GatewayError):
    """Raised when a job id matches no job."""

    status = 404
    kind = "not_found"


class ConflictError(GatewayError):
    """Raised when an admin action does not fit the job's current status."""

    status = 409
    kind = "conflict"


class UnauthorizedError(GatewayError):
    """Raised when an admin request lacks the configured bearer token."""

    status = 401
    kind = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="smi-admin"'}


class DownloadForbiddenError(GatewayError):
    """Raised when a download token's signature does not match (tampered or made up)."""

    status = 403
    kind = "forbidden"


class DownloadExpiredError(GatewayError):
    """Raised when a download token is older than the configured lifetime."""

    status = 410
    kind = "link_expired"


class WebhookSignatureError(GatewayError):
    """Raised when a webhook's Stripe-Signature is missing, wrong or too old."""

    status = 400
    kind = "invalid_signature"


class PaymentProviderUnavailable(GatewayError):
    """Raised when Stripe is rate limiting or unreachable after the SDK's retries."""

    status = 503
    kind = "payment_provider_unavailable"

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class PaymentProviderRejected(GatewayError):
    """Raised when Stripe refuses a request as invalid (a bug or a configuration problem)."""

    status = 502
    kind = "payment_provider_rejected"


def error_response(error: GatewayError) -> JSONResponse:
    """The one place a domain error becomes an HTTP answer."""
    return JSONResponse(
        {"error": {"type": error.kind, "message": str(error)}},
        status_code=error.status,
        headers=error.headers(),
    )
