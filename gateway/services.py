"""What the handlers use, made once per process in the app's lifespan.

    services = Services.open(config)       # database, Stripe, storage, links, broker
    request.app.state.services = services  # handlers: gateway.http.requests.services_of
    services.close()

The background threads get the same objects (``Background.start(services)``),
so every part of one process signs links with one ``DownloadLinks`` and
talks to one broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.config import GatewayConfig
from gateway.delivery.links import DownloadLinks
from gateway.delivery.seller import SELLER_CHANNELS, seller_channels
from gateway.money.payments import Payments
from gateway.store.database import create_database_engine, migrate, session_factory
from shared.broker import Broker
from shared.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Services:
    """One process's connections and helpers."""

    config: GatewayConfig
    engine: Engine
    sessions: sessionmaker[Session]
    payments: Payments
    storage: Storage
    links: DownloadLinks
    broker: Broker

    @classmethod
    def open(cls, config: GatewayConfig) -> Services:
        """Connect everything; a SQLite database is migrated here (PostgreSQL: ``migrate``)."""
        engine = create_database_engine(config.database_url)
        if engine.dialect.name == "sqlite":
            migrate(engine)
        if not config.mail.smtp_url:
            log.warning(
                "no SMI_SMTP_URL: emails are written as files in %s and reach no customer",
                config.mail.folder,
            )
        return cls(
            config=config,
            engine=engine,
            sessions=session_factory(engine, {SELLER_CHANNELS: seller_channels(config.seller)}),
            payments=Payments(config.stripe, config.checkout_options),
            storage=Storage(config.storage_url),
            links=DownloadLinks(
                config.download_secret,
                config.public_url,
                config.download_ttl_s,
                config.download_previous_secrets,
            ),
            broker=Broker(config.broker_url),
        )

    def close(self) -> None:
        self.broker.close()
        self.engine.dispose()
