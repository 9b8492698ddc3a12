"""The emulator's one error: Stripe's error body with its HTTP status."""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    """An error answered with Stripe's error body: ``{"error": {"type", "message", ...}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type, "message": message}
        for key, value in (("code", code), ("param", param), ("decline_code", decline_code)):
            if value is not None:
                self.body[key] = value


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    """Stripe's 404 for an id that names nothing."""
    return StripeError(
        f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param
    )
