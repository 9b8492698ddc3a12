"""Broker topology: the exchanges and queues, and nothing else.

- ``smi.jobs`` (direct) routes paid jobs to the ``smi.upscale`` queue that
  every GPU worker consumes, one message at a time, acknowledged late.
- Messages a worker cannot decode are rejected into ``smi.dead`` through
  the dead-letter exchange, never retried in a loop.
- ``smi.events`` (direct) carries what workers report back to the gateway's
  ``smi.job-events`` queue.
- ``smi.preview`` (on ``smi.jobs``) carries free previews: workers serve it on a
  consumer of its own, beside paid jobs; its messages expire after a minute
  (a preview nobody waits for any more is not made).

All queues are durable and messages persistent: a broker restart loses
nothing that was confirmed. A message goes to its queue's exchange with its
queue's routing key (``shared.broker.Broker.publish``).
"""

from __future__ import annotations

from kombu import Exchange, Queue

JOBS_EXCHANGE = Exchange("smi.jobs", type="direct", durable=True)
EVENTS_EXCHANGE = Exchange("smi.events", type="direct", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("smi.dlx", type="direct", durable=True)

UPSCALE_ROUTING_KEY = "upscale"
PREVIEW_ROUTING_KEY = "preview"
PREVIEW_TTL_MS = 60_000
EVENTS_ROUTING_KEY = "job-event"
DEAD_ROUTING_KEY = "dead"

# Rejected messages go to the dead-letter queue instead of being redelivered.
DEAD_LETTERING = {
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
    "x-dead-letter-routing-key": DEAD_ROUTING_KEY,
}

UPSCALE_QUEUE = Queue(
    "smi.upscale",
    exchange=JOBS_EXCHANGE,
    routing_key=UPSCALE_ROUTING_KEY,
    durable=True,
    queue_arguments=DEAD_LETTERING,
)
EVENTS_QUEUE = Queue(
    "smi.job-events",
    exchange=EVENTS_EXCHANGE,
    routing_key=EVENTS_ROUTING_KEY,
    durable=True,
    queue_arguments=DEAD_LETTERING,
)
PREVIEW_QUEUE = Queue(
    "smi.preview",
    exchange=JOBS_EXCHANGE,
    routing_key=PREVIEW_ROUTING_KEY,
    durable=True,
    queue_arguments={**DEAD_LETTERING, "x-message-ttl": PREVIEW_TTL_MS},
)
DEAD_QUEUE = Queue(
    "smi.dead", exchange=DEAD_LETTER_EXCHANGE, routing_key=DEAD_ROUTING_KEY, durable=True
)

ALL_QUEUES = (UPSCALE_QUEUE, EVENTS_QUEUE, PREVIEW_QUEUE, DEAD_QUEUE)
