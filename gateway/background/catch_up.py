"""Catching up with Stripe: events whose webhook never arrived are applied all the same.

    catch_up = StripeCatchUp(sessions, payments)
    catch_up.check()          # every SMI_STRIPE_CATCH_UP_S seconds

Webhooks can be lost for good: a gateway down longer than Stripe retries,
a firewall, a misconfigured endpoint. Each pass lists Stripe's events of
the types we handle since its cursor (a day back at start, then where the
last pass got to, less a margin for clocks and late writes) and applies
each oldest first through ``apply_event``, the webhook's own once-only
path: an event that already took effect is a duplicate and changes
nothing. Every gateway process may run one.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import EventTooEarlyError, PaymentProviderUnavailable
from gateway.money.payments import Payments
from gateway.money.stripe_events import HANDLED_TYPES, apply_event

log = logging.getLogger(__name__)

LOOKBACK_S = 24 * 3600  # a Checkout Session lives at most a day
MARGIN_S = 300


class StripeCatchUp:
    """Lists Stripe's events and applies the ones that never arrived."""

    def __init__(self, sessions: sessionmaker[Session], payments: Payments) -> None:
        self.sessions = sessions
        self.payments = payments
        self.cursor = int(time.time()) - LOOKBACK_S

    def check(self) -> int:
        """One pass; returns how many events took effect now (not duplicates)."""
        events = self.payments.list_events(sorted(HANDLED_TYPES), self.cursor - MARGIN_S)
        applied = 0
        for event in sorted(events, key=lambda e: (e.created, e.id)):
            context = {"event_id": event.id, "type": event.type}
            try:
                outcome = apply_event(self.sessions, event, self.payments)
            except (EventTooEarlyError, PaymentProviderUnavailable):
                break  # for now: the next pass takes it up again from here, in order
            except Exception as exc:
                # One event that cannot be applied (stored with why, for an admin to see
                # and replay) must not hold up every later one: Stripe retries its webhook.
                log.error("a Stripe event could not be applied: %s", exc, extra=context)
                self.cursor = max(self.cursor, event.created)
                continue
            if outcome == "applied":
                applied += 1
                log.warning("applied a Stripe event whose webhook never came", extra=context)
            self.cursor = max(self.cursor, event.created)
        return applied
