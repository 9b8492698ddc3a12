"""Named places where a process can be made to die, to prove that a crash there loses nothing.

    SMI_FAILPOINTS=webhook.committed smi-gateway      # dies (SIGKILL) the first time it gets there

A fault test starts a process with a point armed, lets it die there, starts
it again without, and checks the money: nothing lost, nothing twice. The
points sit where a crash is most dangerous (between two systems' writes);
``POINTS`` lists them. Unarmed, a point costs one set lookup.
"""

from __future__ import annotations

import os
import signal

from shared.settings import read

POINTS = {
    "webhook.applied": "an event's changes made, not yet committed",
    "webhook.committed": "an event's changes committed, Stripe not yet answered",
    "relay.published": "a job message published, not yet marked as sent",
    "refund.sent": "Stripe has made the refund, we have not recorded it",
}

_ARMED = frozenset(name.strip() for name in read("FAILPOINTS").split(",") if name.strip())
_unknown = _ARMED - POINTS.keys()
if _unknown:
    raise ValueError(f"SMI_FAILPOINTS names no such point: {', '.join(sorted(_unknown))}")


def failpoint(name: str) -> None:
    """Kill this process, as ``kill -9`` would, if ``name`` is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
