"""The queue consumer: one process per GPU takes paid jobs one at a time and reports back.

    worker = UpscaleWorker(connect(config.broker_url), storage, models, events, config)
    worker.run()            # until SIGTERM: finishes the current job, then returns

For each ``UpscaleRequest`` on ``smi.upscale`` (prefetch 1, acknowledged late):

1. ``started`` event; if the result is already in storage (a redelivery
   after a crash), ``completed`` again without recomputing;
2. read the source, upscale it (``progress`` events as tiles finish, and a
   heartbeat while a long tile runs), write the result;
3. ``completed`` event, and only then ack.

Errors by type: a ``PermanentError`` (corrupt image, unknown model) fails
the job at once; anything else is tried again with backoff up to
``max_attempts`` times, then fails it. A body that is not an
``UpscaleRequest`` goes to ``smi.dead``. If the broker goes away before the
ack, the broker hands the job to a worker again, which finds the result.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.mixins import ConsumerMixin

from shared.messages import EventKind, JobEvent, MessageError, UpscaleRequest
from shared.storage import Storage
from shared.topology import (
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    EVENTS_ROUTING_KEY,
    UPSCALE_QUEUE,
    connect,
    dead_letter,
    publish_json,
)
from upscaler.errors import PermanentError, UpscalerError
from upscaler.images import decode_image, encode_image, output_format
from upscaler.pipeline import Upscaler
from upscaler.registry import ModelRegistry
from upscaler.worker_config import WorkerConfig

log = logging.getLogger(__name__)


class SourceMissingError(PermanentError):
    """Raised when a job's source image is not in storage (it never will be)."""


class EventPublisher:
    """Publishes job events on a connection of its own; safe to share between threads."""

    def __init__(self, broker_url: str, worker: str) -> None:
        self.broker_url = broker_url
        self.worker = worker
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def publish(self, request: UpscaleRequest, kind: EventKind, **fields: Any) -> JobEvent:
        """Send one event; retries a broker hiccup a few times, then raises."""
        event = JobEvent(
            job_id=request.job_id,
            kind=kind,
            event_id=f"{request.job_id}:{kind}:{uuid.uuid4().hex[:12]}",
            worker=self.worker,
            attempt=request.attempt,
            **fields,
        )
        with self._lock:
            if self._connection is None:
                self._connection = connect(self.broker_url)
            producer = self._connection.Producer()
            send = self._connection.ensure(
                producer, publish_json, max_retries=5, interval_start=0.5, interval_max=5
            )
            send(
                producer,
                event.to_json(),
                exchange=EVENTS_EXCHANGE,
                routing_key=EVENTS_ROUTING_KEY,
                queue=EVENTS_QUEUE,
                message_id=event.event_id,
                headers={"job_id": event.job_id},
            )
        log.info("event %s", kind, extra={"job_id": request.job_id, "progress": fields})
        return event

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.release()
                self._connection = None


class _Heartbeat:
    """Repeats the last progress event every ``interval_s`` while a job runs."""

    def __init__(self, send: Callable[[], None], interval_s: float) -> None:
        self._send = send
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._send()
            except Exception:  # a missed heartbeat is not worth the job
                log.warning("heartbeat not sent", exc_info=True)


class UpscaleWorker(ConsumerMixin):
    """Consumes ``smi.upscale`` one message at a time; see the module docstring."""

    def __init__(
        self,
        connection: Connection,
        storage: Storage,
        registry: ModelRegistry,
        events: EventPublisher,
        config: WorkerConfig,
    ) -> None:
        self.connection = connection
        self.storage = storage
        self.registry = registry
        self.events = events
        self.config = config
        self._upscalers: dict[str, Upscaler] = {}
        self.jobs_done = 0

    def warm_up(self) -> None:
        """Load the default model before taking jobs, so missing weights show at start."""
        self._upscaler(self.registry.get().name)

    def get_consumers(self, consumer_class: Any, channel: Any) -> list[Any]:
        return [
            consumer_class(
                queues=[UPSCALE_QUEUE], on_message=self.on_upscale_message, prefetch_count=1
            )
        ]

    def on_upscale_message(self, message: Any) -> None:
        try:
            request = UpscaleRequest.from_json(message.body)
        except MessageError as exc:
            log.error("undecodable job message sent to the dead-letter queue: %s", exc)
            dead_letter(
                self.connection.Producer(), message.body, reason=str(exc), origin=UPSCALE_QUEUE.name
            )
            message.ack()
            return
        self.process(request)
        message.ack()  # the result is stored and its event published
        self.jobs_done += 1
        if self.config.max_jobs and self.jobs_done >= self.config.max_jobs:
            self.should_stop = True

    def process(self, request: UpscaleRequest) -> JobEvent:
        """Do one job and publish its outcome; returns the final event."""
        context = {"job_id": request.job_id, "attempt": request.attempt}
        self.events.publish(request, EventKind.STARTED, progress=0.0)
        if self._result_stored(request.result_key):
            log.info("result already stored; announcing it again", extra=context)
            return self.events.publish(
                request, EventKind.COMPLETED, progress=1.0, result_key=request.result_key
            )
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                seconds = self._upscale(request)
            except PermanentError as exc:
                log.warning("job failed for good: %s", exc, extra=context)
                return self.events.publish(
                    request, EventKind.FAILED, error=_describe(exc), retryable=False
                )
            except Exception as exc:  # retryable, or a surprise: both get another try
                if not isinstance(exc, UpscalerError | OSError):
                    log.exception("unexpected error", extra=context)
                if attempt == self.config.max_attempts:
                    return self.events.publish(
                        request,
                        EventKind.FAILED,
                        error=f"{_describe(exc)} (after {attempt} tries)",
                        retryable=True,
                    )
                delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
                log.warning("try %d failed, again in %.1fs: %s", attempt, delay, exc, extra=context)
                time.sleep(delay)
                continue
            return self.events.publish(
                request,
                EventKind.COMPLETED,
                progress=1.0,
                result_key=request.result_key,
                extra={"seconds": round(seconds, 3)},
            )
        raise AssertionError("unreachable")

    def _result_stored(self, key: str) -> bool:
        try:
            return self.storage.exists(key)
        except OSError:  # storage unreachable: the upscale below retries and reports it
            log.warning("cannot tell whether %s is stored", key, exc_info=True)
            return False

    def _upscale(self, request: UpscaleRequest) -> float:
        started = time.perf_counter()
        try:
            data = self.storage.get(request.source_key)
        except FileNotFoundError as exc:
            raise SourceMissingError(f"no source image at {request.source_key}") from exc
        fmt = output_format(Path(request.result_key))
        image = decode_image(data, max_pixels=self.config.max_pixels)
        upscaler = self._upscaler(request.model)
        last = {"fraction": 0.0, "sent_at": time.monotonic()}

        def progress(done: int, total: int) -> None:
            last["fraction"] = done / total if total else 1.0
            if time.monotonic() - last["sent_at"] >= self.config.progress_interval_s:
                last["sent_at"] = time.monotonic()
                self.events.publish(request, EventKind.PROGRESS, progress=last["fraction"])

        def heartbeat() -> None:
            self.events.publish(request, EventKind.PROGRESS, progress=last["fraction"])

        with _Heartbeat(heartbeat, self.config.heartbeat_s):
            result = upscaler.upscale(image.pixels, progress=progress)
        self.storage.put(request.result_key, encode_image(result.pixels, fmt))
        return time.perf_counter() - started

    def _upscaler(self, model: str) -> Upscaler:
        if model not in self._upscalers:
            self._upscalers[model] = Upscaler.load(
                self.registry,
                model,
                device=self.config.device,
                precision=self.config.precision,
                options=self.config.overrides(),
                compile=self.config.compile,
            )
        return self._upscalers[model]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
