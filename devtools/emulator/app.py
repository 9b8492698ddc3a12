"""The emulator's HTTP face: Stripe's API under ``/v1``, the hosted checkout page, controls.

app = create_emulator_app(EmulatorSettings(public_url="http://127.0.0.1:12111",
                                           webhook_url="http://127.0.0.1:8000/webhooks/stripe",
                                           webhook_secret="whsec_test"))

The endpoints are module-level functions of the request (``api``: Stripe's
API; ``pages``: the checkout page, invoices, the tests' controls); what
they share lives on ``app.state``: the ``EmulatorState`` (``emulator``),
the ``faults``, the webhook ``sender`` and the ``idempotency`` answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette

from devtools.emulator import api, pages
from devtools.emulator.state import EmulatorState
from devtools.emulator.webhooks import Faults, WebhookSender


@dataclass
class EmulatorSettings:
    public_url: str
    webhook_url: str | None = None
    webhook_secret: str = "whsec_emulator"
    faults: Faults = field(default_factory=Faults)


def create_emulator_app(settings: EmulatorSettings) -> Starlette:
    sender = WebhookSender(settings.webhook_url, settings.webhook_secret, settings.faults)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        sender.close()

    app = Starlette(routes=[*api.ROUTES, *pages.ROUTES], lifespan=lifespan)
    app.state.emulator = EmulatorState(settings.public_url, sender.send)
    app.state.faults = settings.faults
    app.state.sender = sender
    app.state.idempotency = api.Idempotency()
    return app
