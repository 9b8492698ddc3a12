"""The gateway's background work, as threads of the gateway process or a process of its own.

    background = Background.start(services)     # in the app's lifespan, or smi-gateway background
    background.stop()

- outbox relay: paid jobs to the broker (``gateway.background.relay``);
- job events: worker reports applied to jobs (``gateway.background.job_events``);
- emails: queued customer emails sent (``gateway.delivery.mailer``);
- refunds: due refunds sent to Stripe (``gateway.money.refunds``);
- watchdog: stalled jobs published again or refunded (``gateway.background.watchdog``);
- Stripe catch-up: events whose webhook never came (``gateway.background.catch_up``);
- retention: stored images deleted when they are no longer needed
  (``gateway.background.retention``);
- seller: notifications to the seller sent (``gateway.delivery.seller``);
- reconciliation: Stripe against our records, mismatches to the seller
  (``gateway.money.reconciliation``).

Each may run in any number of gateway processes at once: rows are claimed
with ``SKIP LOCKED`` or leases, effects are guarded by unique keys.

``smi-gateway background`` serves no HTTP, so its liveness is a file: while
every loop's thread runs and none has been inside one step for longer than
``STUCK_S`` (a call that never returns), ``wait`` touches ``alive`` every
``ALIVE_EVERY_S`` (``SMI_DATA_DIR/background.alive`` in ``smi-gateway
background``); a probe fails when the file is older than a minute
(deploy/compose.yaml, deploy/k8s/gateway.yaml).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.background.catch_up import StripeCatchUp
from gateway.background.job_events import consume_job_events
from gateway.background.loops import Periodic
from gateway.background.relay import OutboxRelay
from gateway.background.retention import Retention
from gateway.background.watchdog import Watchdog
from gateway.delivery.mailer import EmailRelay, Mailer
from gateway.delivery.seller import SellerNotifier
from gateway.money.reconciliation import Reconciler
from gateway.money.refunds import Refunder
from gateway.services import Services

log = logging.getLogger(__name__)

ALIVE_EVERY_S = 10.0
STUCK_S = 900.0  # far beyond any step's timeouts (Stripe, SMTP, the database, storage)


@dataclass
class Background:
    """The running background threads of one gateway process."""

    threads: list[threading.Thread] = field(default_factory=list)
    stops: list[threading.Event] = field(default_factory=list)
    loops: list[Periodic] = field(default_factory=list)
    events_up: threading.Event | None = None  # set while the job-events consumer runs

    @classmethod
    def start(cls, services: Services) -> Background:
        """Every loop and the job-event consumer, each a daemon thread on ``services``."""
        config, sessions = services.config, services.sessions
        loops = [
            OutboxRelay(sessions, services.broker).periodic(),
            Periodic("emails", EmailRelay.for_config(sessions, config, services.links).send_due),
            Periodic("refunds", Refunder(sessions, services.payments, config.recovery).refund_due),
            Periodic(
                "watchdog",
                Watchdog(sessions, config.recovery).check,
                interval_s=config.recovery.watchdog_interval_s,
            ),
            Periodic(
                "stripe-catch-up",
                StripeCatchUp(sessions, services.payments).check,
                interval_s=config.recovery.stripe_catch_up_s,
                max_backoff_s=max(config.recovery.stripe_catch_up_s, 300.0),
            ),
            Periodic(
                "retention",
                Retention(
                    sessions,
                    services.storage,
                    config.recovery.result_retention_days,
                    config.previews.keep_s,
                ).sweep,
                interval_s=config.recovery.retention_interval_s,
            ),
            Periodic(
                "seller",
                SellerNotifier(
                    sessions, config.seller, Mailer(config.mail), config.mail.sender
                ).send_due,
            ),
            Periodic(
                "reconciliation",
                Reconciler(sessions, services.payments).check,
                interval_s=config.seller.reconcile_interval_s,
                max_backoff_s=max(config.seller.reconcile_interval_s, 300.0),
            ),
        ]
        events_up = threading.Event()
        events_up.set()  # until its consumer is seen to die
        background = cls(loops=loops, events_up=events_up)
        for loop in loops:
            thread, stop = loop.start()
            background.threads.append(thread)
            background.stops.append(stop)
        events_stop = threading.Event()
        consumer = threading.Thread(
            target=consume_job_events,
            args=(services.broker, sessions, events_stop, events_up),
            name="job-events",
            daemon=True,
        )
        consumer.start()
        background.threads.append(consumer)
        background.stops.append(events_stop)
        return background

    def stop(self, timeout_s: float = 10.0) -> None:
        for stop in self.stops:
            stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)

    def problem(self) -> str | None:
        """``None`` while every thread runs and no loop is stuck in a step, else what is wrong."""
        for thread in self.threads:
            if not thread.is_alive():
                return f"the {thread.name} thread has ended"
        if self.events_up is not None and not self.events_up.is_set():
            return "the job-events consumer is restarting"
        now = time.monotonic()
        for loop in self.loops:
            if loop.stuck_for(now) > STUCK_S:
                return f"{loop.name} has been in one step for {loop.stuck_for(now):.0f} s"
        return None

    def wait(
        self, stop: threading.Event, alive: Path | None = None, every_s: float = ALIVE_EVERY_S
    ) -> None:
        """Block until ``stop`` is set, then stop everything; meanwhile touch ``alive`` every
        ``every_s`` while ``problem`` finds none (and say what it found once it does)."""
        said: str | None = None
        while True:
            if alive is not None:
                problem = self.problem()
                if problem is None:
                    alive.parent.mkdir(parents=True, exist_ok=True)
                    alive.touch()
                elif problem != said:
                    log.error("not live: %s", problem)
                said = problem
            if stop.wait(every_s if alive is not None else None):
                break
        self.stop()
