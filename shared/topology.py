"""Broker topology: the exchanges and queues, and nothing else.

- ``smi.jobs`` (direct) routes paid jobs to the ``smi.upscale`` queue that
  every GPU worker consumes, one message at a time, acknowledged late.
- Messages a worker cannot decode are rejected into ``smi.dead`` through
  the dead-letter exchange, never retried in a loop.
- ``smi.events`` (direct) carries what workers report back to the gateway's
  ``smi.job-events`` queue.

All queues are durable and messages persistent: a broker restart loses
nothing that was confirmed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.transport import filesystem
from kombu.transport.virtual.base import BrokerState

JOBS_EXCHANGE = Exchange("smi.jobs", type="direct", durable=True)
EVENTS_EXCHANGE = Exchange("smi.events", type="direct", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("smi.dlx", type="direct", durable=True)

UPSCALE_ROUTING_KEY = "upscale"
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
DEAD_QUEUE = Queue(
    "smi.dead", exchange=DEAD_LETTER_EXCHANGE, routing_key=DEAD_ROUTING_KEY, durable=True
)

ALL_QUEUES = (UPSCALE_QUEUE, EVENTS_QUEUE, DEAD_QUEUE)


def default_broker_url(data_dir: Path) -> str:
    """The embedded default: a folder that the processes of one machine share."""
    return f"filesystem://{data_dir / 'broker'}"


def publish_json(
    producer: Any,
    body: str,
    *,
    exchange: Exchange,
    routing_key: str,
    queue: Queue,
    message_id: str,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    """Publish a JSON body as it is (no kombu serializer), persistent, declaring ``queue``.

    With ``connect``'s publisher confirms this returns once the broker has it.
    """
    producer.publish(
        body,
        exchange=exchange,
        routing_key=routing_key,
        declare=[queue],
        serializer=None,
        content_type=content_type,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=message_id,
        headers=headers or {},
        retry=False,
    )


def dead_letter(producer: Any, body: bytes | str, *, reason: str, origin: str) -> None:
    """Park an undeliverable message in ``smi.dead`` with why and where it came from.

    Done by hand rather than with ``reject(requeue=False)`` so that the embedded
    broker, which has no dead-letter exchanges, keeps the message too.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    publish_json(
        producer,
        body,
        exchange=DEAD_LETTER_EXCHANGE,
        routing_key=DEAD_ROUTING_KEY,
        queue=DEAD_QUEUE,
        message_id=f"dead:{origin}",
        headers={"x-smi-reason": reason[:500], "x-smi-origin": origin},
        content_type="application/octet-stream",  # it may not even be JSON
    )


def connect(url: str) -> Connection:
    """A kombu connection for ``url`` with the options our topology relies on.

    - ``amqp://`` / ``pyamqp://`` (RabbitMQ): publisher confirms, so a publish
      returns only once the broker has the message;
    - ``filesystem://PATH``: the embedded default, a folder shared by the
      processes of one machine.
    """
    if url.startswith("filesystem://"):
        folder = Path(url.removeprefix("filesystem://") or "var/broker").resolve()
        for sub in ("processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return Connection(
            "filesystem://",
            transport=_folder_transport(str(folder)),
            transport_options={
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "processed_folder": str(folder / "processed"),
                "control_folder": str(folder / "control"),
                "store_processed": False,
            },
        )
    return Connection(url, transport_options={"confirm_publish": True})


_FOLDER_TRANSPORTS: dict[str, type[filesystem.Transport]] = {}


def _folder_transport(folder: str) -> type[filesystem.Transport]:
    """kombu's filesystem transport with its declared-bindings memory kept per folder.

    kombu remembers declared exchanges and bindings in one process-wide
    state; a process that used a second folder would skip writing the
    binding there and route its messages nowhere.
    """
    if folder not in _FOLDER_TRANSPORTS:
        _FOLDER_TRANSPORTS[folder] = type(
            "FolderTransport", (filesystem.Transport,), {"global_state": BrokerState()}
        )
    return _FOLDER_TRANSPORTS[folder]
