"""The broker behind one small port: publish, and consume with ack, requeue or dead-letter.

    broker = Broker("amqp://guest:guest@rabbit//")     # or filesystem://FOLDER (one machine)
    broker.publish(UPSCALE_QUEUE, body, message_id="job_1:upscale:1")
    broker.consume(EVENTS_QUEUE, handle, prefetch=20, stop=stop)     # until ``stop`` is set
    broker.keep_consuming(EVENTS_QUEUE, handle, prefetch=20, stop=stop, up=up)  # restarted

Every handler settles each ``Delivery`` once: ``ack()`` when its effect is
done, ``requeue()`` to have it delivered again, ``dead_letter(reason)`` to
park it in ``smi.dead`` (done by hand rather than by the broker's
dead-letter exchange, so the embedded broker keeps such messages too). A
delivery may be settled from any thread: kombu's channels belong to the
consumer's thread, so other threads' settlements are queued and applied
there within ``SETTLE_INTERVAL_S``. A handler that raises, or returns
without settling and is never settled later, leaves the message to be
delivered again.

A message published with ``expires_at`` carries that moment (epoch seconds)
in its ``x-smi-expires-at`` header, read back as ``Delivery.expires_at``: a
consumer checks ``delivery.expired()`` before any work and acks it unused.
RabbitMQ also drops such messages by the queue's ``x-message-ttl``; kombu's
filesystem transport honours no TTL at all, so on the embedded broker this
check is the only one.

Publishing reuses one connection. When the broker has dropped it since the
last publish (a restart, a network cut), the publish that finds it dead is
made once more on a new connection before anything is raised: the first
caller after a reconnect never pays for the old connection. Only a broker
that refuses the new connection too is a ``BrokerError``. A message whose
first try reached the broker unconfirmed may arrive twice; every consumer
is idempotent by message id or content.

When ``stop`` is set the consumer stops taking messages and keeps running
until every delivery it handed out is settled (or ``drain_timeout_s``
passes; the broker then delivers the rest again). This is the only module
that uses kombu.

``consume`` raises what its loop cannot survive (a message the transport
cannot even parse, a bug); ``keep_consuming`` starts it again after a pause
that doubles up to ``RESTART_MAX_S``, keeping ``up`` clear while it is down,
for consumers whose process would otherwise go on without them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqp.exceptions
from kombu import Connection, Producer, Queue
from kombu.exceptions import ChannelError, OperationalError
from kombu.mixins import ConsumerMixin
from kombu.transport import filesystem
from kombu.transport.virtual.base import BrokerState
from kombu.utils import json as kombu_json

from shared.topology import DEAD_QUEUE

log = logging.getLogger(__name__)

SETTLE_INTERVAL_S = 0.2
RESTART_S, RESTART_MAX_S = 1.0, 30.0
EXPIRES_HEADER = "x-smi-expires-at"
# What kombu raises while the broker is away or drops the connection; py-amqp's own
# connection errors too (ConnectionForced: RabbitMQ closed it, as on a restart or
# ``rabbitmqctl close_connection``), which kombu lets through as they are.
_KOMBU_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    OperationalError,
    amqp.exceptions.ConnectionError,
)


class BrokerError(Exception):
    """Raised by ``publish`` when the broker cannot be reached or does not confirm."""


class Broker:
    """One broker URL; publishes on a connection of its own, safe to share between threads.

    ``heartbeat_s`` (RabbitMQ): AMQP heartbeats on the consuming connections, 0 for none.
    """

    def __init__(self, url: str, *, heartbeat_s: float = 0.0) -> None:
        self.url = url
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def connection(self, heartbeat_s: float = 0.0) -> Connection:
        """A new kombu connection with the options our topology relies on.

        - ``amqp://`` / ``pyamqp://`` (RabbitMQ): publisher confirms, so a
          publish returns only once the broker has the message; with
          ``heartbeat_s``, AMQP heartbeats (the consumer loop sends and checks
          them), so that a peer gone silent is noticed by both sides;
        - ``filesystem://PATH``: the embedded default, a folder shared by the
          processes of one machine.
        """
        if self.url.startswith("filesystem://"):
            folder = Path(self.url.removeprefix("filesystem://") or "var/broker").resolve()
            for sub in ("processed", "control"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            return Connection(
                hostname="localhost",  # unused by the transport; kombu warns without one
                transport=_folder_transport(str(folder)),
                transport_options={
                    "data_folder_in": str(folder),
                    "data_folder_out": str(folder),
                    "processed_folder": str(folder / "processed"),
                    "control_folder": str(folder / "control"),
                    "store_processed": False,
                },
            )
        return Connection(
            self.url, heartbeat=heartbeat_s, transport_options={"confirm_publish": True}
        )

    def publish(
        self,
        to: Queue,
        body: str | bytes,
        *,
        message_id: str,
        headers: dict[str, str] | None = None,
        retries: int = 0,
        content_type: str = "application/json",
        expires_at: float | None = None,
    ) -> None:
        """Publish ``body`` as it is, persistent, to ``to`` (declared on the way).

        With RabbitMQ this returns once the broker confirms it has the
        message. A publishing connection the broker dropped since the last
        publish is replaced and the message sent again at once (see the
        module). ``retries`` reconnects and tries again that many times more
        (with a growing pause) before ``BrokerError``. ``expires_at`` (epoch
        seconds) goes with the message for consumers to drop it after then.
        """
        headers = dict(headers or {})
        if expires_at is not None:
            headers[EXPIRES_HEADER] = f"{expires_at:.3f}"
        with self._lock:
            while True:  # twice at most: a second try is on a new connection
                reused = self._connection is not None
                try:
                    self._publish(to, body, message_id, headers, retries, content_type)
                    return
                except _KOMBU_ERRORS as exc:
                    self._forget()
                    if not reused:
                        raise BrokerError(f"cannot publish to {to.name}: {exc}") from exc
                    log.info("publishing connection lost (%s); publishing on a new one", exc)

    def _publish(
        self,
        to: Queue,
        body: str | bytes,
        message_id: str,
        headers: dict[str, str],
        retries: int,
        content_type: str,
    ) -> None:
        if self._connection is None:
            self._connection = self.connection()
        self._connection.ensure_connection(max_retries=retries, interval_start=0.5, interval_max=5)
        producer = self._connection.Producer()
        send: Callable[..., None] = _send
        if retries:
            send = self._connection.ensure(
                producer, _send, max_retries=retries, interval_start=0.5, interval_max=5
            )
        send(producer, to, body, message_id, headers, content_type)

    def consume(
        self,
        source: Queue,
        handle: Callable[[Delivery], None],
        *,
        prefetch: int,
        stop: threading.Event,
        drain_timeout_s: float = 600.0,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Hand each message of ``source`` to ``handle`` until ``stop`` is set and all settle.

        Reconnects by itself while the broker is away; returns only after
        ``stop``. ``on_poll`` is called on the consuming thread after each wait
        for messages (every fraction of a second) and each reconnection try: it
        tells that the loop itself still turns.
        """
        consumer = _Consumer(self, source, handle, prefetch, stop, drain_timeout_s, on_poll)
        consumer.run_until_stopped()

    def keep_consuming(
        self,
        source: Queue,
        handle: Callable[[Delivery], None],
        *,
        prefetch: int,
        stop: threading.Event,
        up: threading.Event | None = None,
    ) -> None:
        """``consume``, started again whenever it dies, until ``stop``; ``up`` is set while
        it runs. What the dead loop had handed out and not settled, the broker delivers
        again (its connection is gone)."""
        up = up if up is not None else threading.Event()
        delay = RESTART_S
        while not stop.is_set():
            up.set()
            try:
                self.consume(source, handle, prefetch=prefetch, stop=stop)
                return
            except Exception:
                up.clear()
                log.exception(
                    "the %s consumer died; starting it again in %.0f s", source.name, delay
                )
                if stop.wait(delay):
                    return
                delay = min(delay * 2, RESTART_MAX_S)

    def queue_stats(self, names: list[str], timeout_s: float = 3.0) -> dict[str, tuple[int, int]]:
        """Each queue's (messages waiting, consumers attached), on a connection of its own.

        A queue not declared yet counts (0, 0). ``BrokerError`` when the broker
        does not answer within ``timeout_s``.
        """
        connection = self.connection()
        connection.connect_timeout = timeout_s  # type: ignore[assignment]
        stats: dict[str, tuple[int, int]] = {}
        try:
            connection.ensure_connection(max_retries=0, timeout=timeout_s)
            for name in names:
                channel = connection.channel()
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                    stats[name] = (int(messages), int(consumers))
                except _KOMBU_ERRORS:
                    raise
                except Exception:  # not declared yet (a 404 closes the channel)
                    stats[name] = (0, 0)
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
        except _KOMBU_ERRORS as exc:
            raise BrokerError(f"the broker does not answer: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                connection.release()
        return stats

    def close(self) -> None:
        """Release the publishing connection (a later publish opens a new one)."""
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(*_KOMBU_ERRORS):
                self._connection.release()
            self._connection = None


class Delivery:
    """One message handed to a handler; settle it once, from any thread."""

    def __init__(self, message: Any, consumer: _Consumer, generation: int) -> None:
        self.body: str | bytes = message.body
        self.headers: dict[str, Any] = dict(message.headers or {})
        self.expires_at = _moment(self.headers.get(EXPIRES_HEADER))
        self.settled = False
        self._message = message
        self._consumer = consumer
        self._generation = generation

    def expired(self, now: float | None = None) -> bool:
        """Whether it was published with an ``expires_at`` that has passed (by ``now``)."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) > self.expires_at

    def ack(self) -> None:
        """Its effect is done: the broker forgets it."""
        self._consumer.settle(self, "ack", None)

    def requeue(self) -> None:
        """Not done: deliver it again (to this consumer or another)."""
        self._consumer.settle(self, "requeue", None)

    def dead_letter(self, reason: str) -> None:
        """It can never be handled: park it in ``smi.dead`` with ``reason``, then ack it."""
        self._consumer.settle(self, "dead", reason)


class _Consumer(ConsumerMixin):
    """kombu's consumer loop with settlements applied on its own thread (see the module)."""

    def __init__(
        self,
        broker: Broker,
        source: Queue,
        handle: Callable[[Delivery], None],
        prefetch: int,
        stop: threading.Event,
        drain_timeout_s: float,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self.connection = broker.connection(broker.heartbeat_s)
        self.on_poll = on_poll
        self.source = source
        self.handle = handle
        self.prefetch = prefetch
        self.stop = stop
        self.drain_timeout_s = drain_timeout_s
        self._thread: int | None = None
        self._pending: queue.SimpleQueue[tuple[Delivery, str, str | None]] = queue.SimpleQueue()
        self._unsettled = 0
        self._generation = 0
        self._channel: Any = None
        self._consumers: list[Any] = []
        self._cancelled = False
        self._stopping_since: float | None = None

    def run_until_stopped(self) -> None:
        self._thread = threading.get_ident()
        try:
            self.run(safety_interval=SETTLE_INTERVAL_S)
        except _Stopped:
            pass
        finally:
            with contextlib.suppress(*_KOMBU_ERRORS):
                self.connection.release()

    def get_consumers(self, consumer_class: Any, channel: Any) -> list[Any]:
        return [
            consumer_class(
                queues=[self.source], on_message=self._on_message, prefetch_count=self.prefetch
            )
        ]

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        # A new connection: what was delivered on the old one is the broker's again.
        self._generation += 1
        self._channel = channel
        self._consumers = list(consumers)
        self._cancelled = False

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        if self.stop.is_set():
            raise _Stopped from exc
        if self.on_poll is not None:
            self.on_poll()  # waiting for the broker is not being stuck
        log.warning("broker unreachable, again in %.0fs: %s", interval, exc)

    def _on_message(self, message: Any) -> None:
        if self._cancelled:  # arrived after we stopped taking work: not ours to start
            message.requeue()
            return
        delivery = Delivery(message, self, self._generation)
        self._unsettled += 1
        try:
            self.handle(delivery)
        except Exception:
            log.exception("handler failed; the message goes back to the queue")
            delivery.requeue()
        self._apply_pending()

    def on_iteration(self) -> None:
        self._apply_pending()
        if self.on_poll is not None:
            self.on_poll()
        if not self.stop.is_set():
            return
        if not self._cancelled:
            for consumer in self._consumers:
                with contextlib.suppress(*_KOMBU_ERRORS):
                    consumer.cancel()
            self._cancelled = True
            self._stopping_since = time.monotonic()
        waited = time.monotonic() - (self._stopping_since or 0.0)
        if self._unsettled <= 0 or waited > self.drain_timeout_s:
            if self._unsettled > 0:
                log.warning("%d unsettled at stop; the broker delivers them again", self._unsettled)
            self.should_stop = True

    def settle(self, delivery: Delivery, action: str, reason: str | None) -> None:
        if threading.get_ident() == self._thread:
            self._apply(delivery, action, reason)
        else:
            self._pending.put((delivery, action, reason))

    def _apply_pending(self) -> None:
        while True:
            try:
                delivery, action, reason = self._pending.get_nowait()
            except queue.Empty:
                return
            self._apply(delivery, action, reason)

    def _apply(self, delivery: Delivery, action: str, reason: str | None) -> None:
        if delivery.settled:
            return
        delivery.settled = True
        self._unsettled -= 1
        if delivery._generation != self._generation:
            return  # its connection is gone: the broker delivers it again
        message = delivery._message
        try:
            if action == "dead":
                _send(
                    Producer(self._channel),
                    DEAD_QUEUE,
                    delivery.body,
                    f"dead:{self.source.name}",
                    {"x-smi-reason": (reason or "")[:500], "x-smi-origin": self.source.name},
                    "application/octet-stream",  # it may not even be JSON
                )
                message.ack()
            elif action == "requeue":
                message.requeue()
            else:
                message.ack()
        except _KOMBU_ERRORS:
            log.warning("could not %s a message; the broker delivers it again", action)


class _Stopped(Exception):
    """Raised inside the consumer loop to leave it while the broker is unreachable."""


def _send(
    producer: Any,
    to: Queue,
    body: str | bytes,
    message_id: str,
    headers: dict[str, str],
    content_type: str,
) -> None:
    if isinstance(body, bytes) and content_type == "application/octet-stream":
        body = body.decode("utf-8", errors="replace")
    producer.publish(
        body,
        exchange=to.exchange,
        routing_key=to.routing_key,
        declare=[to],
        serializer=None,
        content_type=content_type,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=message_id,
        headers=headers,
        retry=False,
    )


def _moment(value: Any) -> float | None:
    """An ``x-smi-expires-at`` header's epoch seconds; ``None`` when absent or not a number."""
    try:
        moment = float(value)
    except (TypeError, ValueError):
        return None
    return moment if moment == moment else None  # NaN never expires anything


def default_broker_url(data_dir: Path) -> str:
    """The embedded default: a folder that the processes of one machine share."""
    return f"filesystem://{data_dir / 'broker'}"


_FOLDER_TRANSPORTS: dict[str, type[filesystem.Transport]] = {}


def _folder_transport(folder: str) -> type[filesystem.Transport]:
    """kombu's filesystem transport with its declared-bindings memory kept per folder.

    kombu remembers declared exchanges and bindings in one process-wide
    state; a process that used a second folder would skip writing the
    binding there and route its messages nowhere.
    """
    if folder not in _FOLDER_TRANSPORTS:
        _FOLDER_TRANSPORTS[folder] = type(
            "FolderTransport",
            (filesystem.Transport,),
            {"global_state": BrokerState(), "Channel": _FolderChannel},
        )
    return _FOLDER_TRANSPORTS[folder]


class _FolderChannel(filesystem.Channel):
    """kombu's folder channel, with a message file that appears only whole, and a binding
    table read again when it was read while another process rewrote it (the writer empties
    the file before it takes its lock)."""

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu creates the message file, then locks it and writes; a reader takes it
        # without a lock, so a consumer in another process could take it empty (a
        # JSONDecodeError that ended that consumer, and the message lost). Written under
        # a name no reader takes (it does not end in ".<queue>.msg"), then renamed. (The
        # ignore: kombu's two base classes declare this method differently.)
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.part"
        try:
            with open(partial, "wb") as file:
                file.write(kombu_json.dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}") from exc

    def get_table(self, exchange: str) -> Any:
        for _ in range(100):
            try:
                return super().get_table(exchange)
            except ValueError:
                time.sleep(0.01)
        return super().get_table(exchange)
