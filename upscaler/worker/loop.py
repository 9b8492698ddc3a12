"""The queue consumer: one process per GPU, its jobs overlapped in three stages.

    worker = UpscaleWorker(Broker(config.broker_url), storage, registry, config)
    worker.run()         # until ``worker.stop`` is set: finishes the jobs it started, then returns

Each ``UpscaleRequest`` from ``smi.upscale`` goes through three stages, each
a thread, so that while the GPU runs job N the CPU decodes job N+1 and
encodes and stores job N-1:

1. prepare: ``started`` event; a result already in storage (a redelivery
   after a crash) is announced ``completed`` again without recomputing;
   otherwise the source is read and decoded;
2. upscale: the network, one job at a time on the device;
3. finish: encode, write the result (one write: one upload on S3), the
   ``completed`` event with its size and sha256, and only then is the message
   acknowledged. A result found stored by then (another worker delivered the
   job while this one was cut off from the broker) is kept, never written
   over, and announced again as it is.

The stages only record how far a job is (decoded: 5%, the model's tiles
from 5% to 90%, encoded: 95%, so that a job of one tile moves too); a
reporter thread sends it as ``progress`` events (every
``progress_interval_s`` while it moves, and every ``heartbeat_s`` for each
job in hand, so the gateway knows the worker lives). ``pipeline=False``
takes one message at a time through the same stages.

Liveness (``/healthz``, ``liveness``): the job loop marks each step it makes
(a tile done, a stage done, a job settled, and while it holds no job each
wait for messages). When no mark comes for ``stall_s``, a job hangs (a hung
device, a read that never returns) or the consumer loop does: ``/healthz``
fails and the orchestrator restarts the worker, whose unacknowledged jobs go
back to the queue. The reporter's heartbeats, from a thread of their own,
prove nothing of that.

Errors, from any stage: a ``PermanentError`` (corrupt image, unknown model)
fails the job at once; anything else is tried again from stage 1 after a
backoff, up to ``max_attempts`` times, then fails it. A body that is not
an ``UpscaleRequest`` goes to ``smi.dead``. Whatever is not acknowledged
when the worker dies goes back to the queue.

Free previews (``smi.preview``) are made on a consumer of their own. One
asked for more than a minute ago (past the moment its message carries) is
acknowledged unmade, on RabbitMQ and the embedded broker alike: the page
that wanted it gave up long ago.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from shared.broker import Broker, Delivery
from shared.images import decode_image
from shared.messages import EventKind, JobEvent, MessageError, PreviewRequest, UpscaleRequest
from shared.storage import Storage, StoredObject
from shared.topology import EVENTS_QUEUE, PREVIEW_QUEUE, UPSCALE_QUEUE
from upscaler.errors import PERMANENT, PermanentError, UpscalerError
from upscaler.models.registry import ModelRegistry
from upscaler.output.images import encode_image, ensure_encodable, output_format
from upscaler.pipeline.precision import PrecisionChoice
from upscaler.pipeline.upscaler import Upscaler
from upscaler.worker import metrics
from upscaler.worker.config import WorkerConfig

log = logging.getLogger(__name__)

# Messages in hand at once when pipelined: one being prepared, one ready for
# the device, one on it, one being finished.
PIPELINE_PREFETCH = 4
REPORT_POLL_S = 0.05
# How far a job is at each point of its stages (see the module docstring).
PROGRESS_DECODED = 0.05
PROGRESS_UPSCALED = 0.9
PROGRESS_ENCODED = 0.95


STORAGE_RETRY_S = 5.0


class SourceMissingError(PermanentError):
    """Raised when a job's source image is not in storage (it never will be)."""


class EventPublisher:
    """Publishes job events through the broker port; safe to share between threads."""

    def __init__(self, broker: Broker, worker: str) -> None:
        self.broker = broker
        self.worker = worker

    def publish(self, request: UpscaleRequest, kind: EventKind, **fields: Any) -> JobEvent:
        """Send one event; retries a broker hiccup a few times, then raises ``BrokerError``."""
        event = JobEvent(
            job_id=request.job_id,
            kind=kind,
            event_id=f"{request.job_id}:{kind}:{uuid.uuid4().hex[:12]}",
            worker=self.worker,
            attempt=request.attempt,
            **fields,
        )
        self.broker.publish(
            EVENTS_QUEUE,
            event.to_json(),
            message_id=event.event_id,
            headers={"job_id": event.job_id},
            retries=5,
        )
        log.info("event %s", kind, extra={"job_id": request.job_id, "progress": fields})
        return event


@dataclass
class Job:
    """One message's work as it moves through the stages."""

    request: UpscaleRequest
    delivery: Delivery | None
    tries: int = 1
    pixels: np.ndarray | None = None
    result: np.ndarray | None = None
    fraction: float = 0.0
    reported: float = 0.0  # the ``started`` event says 0
    stages: dict[str, float] = field(default_factory=dict)
    received: float = field(default_factory=time.monotonic)
    output_pixels: int = 0

    @property
    def context(self) -> dict[str, Any]:
        return {"job_id": self.request.job_id, "attempt": self.request.attempt}


class UpscaleWorker:
    """Consumes ``smi.upscale``; see the module docstring."""

    def __init__(
        self,
        broker: Broker,
        storage: Storage,
        registry: ModelRegistry,
        config: WorkerConfig,
        *,
        events: EventPublisher | None = None,
    ) -> None:
        self.broker = broker
        self.storage = storage
        self.registry = registry
        self.config = config
        self.events = events or EventPublisher(broker, config.name)
        self.stop = threading.Event()
        self.jobs_done = 0
        # By model and precision setting: previews may run another (SMI_WORKER_PREVIEW_PRECISION).
        self._upscalers: dict[tuple[str, str], Upscaler] = {}
        self._buffers = HostBuffers(pinned=config.device.startswith("cuda"))
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._ready: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self._upscaled: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self._ahead = threading.Semaphore(1)
        self._previews_up = threading.Event()  # the preview consumer runs (/readyz)
        self._finished = threading.Event()
        self._in_hand: dict[int, Job] = {}
        self._lock = threading.Lock()
        # When the job loop last moved (monotonic; later than now while a wait is planned).
        self._moved_at = time.monotonic()

    def warm_up(self) -> float:
        """Load the default model before taking jobs; on a GPU or compiled, run it once.

        Missing weights or an unusable device show at start, not on the first
        job; compilation and cuDNN's kernel search happen here too. Previews'
        precision, where it is another, is loaded too. Returns the seconds the
        runs took (0 when there was none).
        """
        default = self.registry.get().name
        loaded = {self._upscaler(default), self._upscaler(default, self.config.preview_precision)}
        return sum(
            upscaler.warm_up()
            for upscaler in loaded
            if self.config.compile or upscaler.device.type == "cuda"
        )

    def run(self) -> None:
        """Take jobs until ``stop`` is set; returns once every started job is settled."""
        stages = [
            threading.Thread(target=self._stage, args=(name, step, source, sink), name=name)
            for name, step, source, sink in (
                ("prepare", self._prepare, self._inbox, self._ready),
                ("upscale", self._upscale, self._ready, self._upscaled),
                ("finish", self._finish, self._upscaled, None),
            )
        ]
        reporter = threading.Thread(target=self._report, name="reporter", daemon=True)
        # Free previews on a consumer of their own: a buyer deciding whether to pay never
        # waits behind the paid queue.
        previews = threading.Thread(target=self._consume_previews, name="previews", daemon=True)
        for thread in [*stages, reporter, previews]:
            thread.start()
        self._moved()
        try:
            self.broker.consume(
                UPSCALE_QUEUE,
                self._on_delivery,
                prefetch=PIPELINE_PREFETCH if self.config.pipeline else 1,
                stop=self.stop,
                on_poll=self._polled,
            )
        finally:
            self.stop.set()
            self._inbox.put(None)  # each stage passes the end on to the next
            for thread in stages:
                thread.join()
            self._finished.set()
            reporter.join()

    def _consume_previews(self) -> None:
        """The preview consumer, started again whenever it dies (as it did when two
        consumers bound the embedded broker's fresh folder at once) until ``stop``; while it
        is down ``/readyz`` says so."""
        self.broker.keep_consuming(
            PREVIEW_QUEUE, self._on_preview, prefetch=1, stop=self.stop, up=self._previews_up
        )

    def readiness(self) -> dict[str, str | None]:
        """What ``/readyz`` reports: ``None`` for each check that passes, else what is wrong
        in words that name no address (an exception's text, with its host, port or
        bucket, goes to the log: the metrics port answers anyone who reaches it)."""
        checks: dict[str, str | None] = {}
        for name, check in (
            ("broker", lambda: self.broker.queue_stats([UPSCALE_QUEUE.name])),
            ("storage", self.storage.check),
        ):
            try:
                check()
                checks[name] = None
            except Exception as exc:
                log.warning(
                    "not ready: the %s does not answer: %s: %s", name, type(exc).__name__, exc
                )
                checks[name] = "unavailable"
        checks["model"] = None if self._upscalers else "no model loaded yet"
        checks["previews"] = None if self._previews_up.is_set() else "the consumer is restarting"
        return checks

    def liveness(self) -> str | None:
        """What ``/healthz`` reports: ``None`` while the job loop moves, else what is stuck."""
        quiet = time.monotonic() - self._moved_at
        if quiet <= self.config.stall_s:
            return None
        with self._lock:
            holding = len(self._in_hand)
        where = f"with {holding} job(s) in hand" if holding else "while waiting for messages"
        return f"the job loop has not moved for {quiet:.0f} s {where}"

    def _moved(self, wait_s: float = 0.0) -> None:
        """The job loop made a step (and plans to wait ``wait_s`` before the next)."""
        self._moved_at = max(self._moved_at, time.monotonic() + wait_s)

    def _polled(self) -> None:
        """The consumer waited for messages: that is the loop's step only while no job is in
        hand (with one, the job itself must move)."""
        if not self._in_hand and self._inbox.empty():
            self._moved()

    def _wait_for_storage(self, job: Job) -> None:
        """Hold the prepare stage (no new job starts) until storage answers or we stop."""
        while not self.stop.is_set():
            problem = self.readiness()["storage"]
            if problem is None:
                return
            log.warning("storage not ready, no job taken: %s", problem, extra=job.context)
            self._moved(STORAGE_RETRY_S)  # waiting for storage is not being stuck
            self.stop.wait(STORAGE_RETRY_S)

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            request = UpscaleRequest.from_json(delivery.body)
        except MessageError as exc:
            log.error("undecodable job message sent to the dead-letter queue: %s", exc)
            delivery.dead_letter(str(exc))
            return
        self._inbox.put(Job(request, delivery))

    def _on_preview(self, delivery: Delivery) -> None:
        try:
            request = PreviewRequest.from_json(delivery.body)
        except MessageError as exc:
            log.error("undecodable preview message sent to the dead-letter queue: %s", exc)
            delivery.dead_letter(str(exc))
            return
        context = {"preview_id": request.preview_id, "model": request.model}
        if delivery.expired():
            # Nobody waits for it any more (the page asks again when its buyer does). RabbitMQ
            # drops such messages itself; the embedded broker delivers them, however late.
            metrics.PREVIEWS.labels(outcome="expired").inc()
            late = time.time() - (delivery.expires_at or 0.0)
            log.warning("preview request expired %.0f s ago; dropped unmade", late, extra=context)
            delivery.ack()
            return
        try:
            self.make_preview(request)
        except Exception as exc:  # the gateway shows "preview unavailable"; nothing is owed
            metrics.PREVIEWS.labels(outcome="failed").inc()
            log.warning("preview failed: %s", exc, extra=context)
            with contextlib.suppress(OSError):
                self.storage.put(f"{request.prefix}/error.txt", str(exc)[:500].encode())
        delivery.ack()

    def make_preview(self, request: PreviewRequest) -> None:
        """Bicubic and the model on the requested square: ``before.png``, then ``after.png``."""
        if self._result_stored(f"{request.prefix}/after.png"):
            return  # an identical request was made already
        started = time.perf_counter()
        image = decode_image(
            self.storage.get(request.source_key), max_pixels=self.config.max_pixels
        )
        pixels = image.pixels
        if pixels.dtype != np.uint8:  # a preview is for the eye: 8 bits
            pixels = (pixels // 257).astype(np.uint8)
        if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
            pixels = pixels[:, :, :-1]  # colour only
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        crop = np.ascontiguousarray(
            pixels[request.y : request.y + request.size, request.x : request.x + request.size]
        )
        if crop.size == 0:
            raise PermanentError(f"the square {request.x},{request.y} is outside the image")
        upscaler = self._upscaler(request.model, self.config.preview_precision)
        after = upscaler.upscale(crop).pixels
        height, width = after.shape[:2]
        before = cv2.resize(crop, (width, height), interpolation=cv2.INTER_CUBIC)
        self.storage.put(f"{request.prefix}/before.png", encode_image(before, "png"))
        self.storage.put(f"{request.prefix}/after.png", encode_image(after, "png"))
        metrics.PREVIEWS.labels(outcome="made").inc()
        log.info(
            "preview made in %.2f s",
            time.perf_counter() - started,
            extra={"preview_id": request.preview_id},
        )

    def _stage(
        self,
        name: str,
        step: Callable[[Job], bool],
        source: queue.Queue[Job | None],
        sink: queue.Queue[Job | None] | None,
    ) -> None:
        """Run ``step`` on each job from ``source``; pass on the ones it keeps going."""
        while (job := source.get()) is not None:
            try:
                carry_on = step(job)
            except Exception as exc:
                self._moved()
                self._failed(job, exc)
                continue
            self._moved()
            if carry_on and sink is not None:
                sink.put(job)
        if sink is not None:
            sink.put(None)

    def _prepare(self, job: Job) -> bool:
        self._ahead.acquire()  # at most one job prepared ahead of the device
        handed_on = False
        try:
            handed_on = self._start(job)
            return handed_on
        finally:
            if not handed_on:
                self._ahead.release()

    def _start(self, job: Job) -> bool:
        """``started``; then announce a stored result again, or decode the source."""
        if self.stop.is_set() and job.tries == 1:
            if job.delivery is not None:
                job.delivery.requeue()  # not started: another worker takes it
            return False
        started = time.perf_counter()
        request = job.request
        with self._lock:
            self._in_hand[id(job)] = job
        self.events.publish(request, EventKind.STARTED, progress=0.0)
        if self._result_stored(request.result_key):
            log.info("result already stored; announcing it again", extra=job.context)
            self._complete(job, {}, self.storage.describe(request.result_key))
            return False
        try:
            data = self.storage.get(request.source_key)
        except FileNotFoundError as exc:
            raise SourceMissingError(f"no source image at {request.source_key}") from exc
        except OSError:
            # Storage itself is away: take no job (and fail none) until it answers again.
            self._wait_for_storage(job)
            data = self.storage.get(request.source_key)
        image = decode_image(data, max_pixels=self.config.max_pixels)
        fmt = output_format(Path(request.result_key))
        ensure_encodable(len(image.mode), image.pixels.dtype, fmt)  # before the device's time
        job.pixels = self._buffers.copy_of(image.pixels)
        job.stages["prepare_s"] = time.perf_counter() - started
        job.fraction = PROGRESS_DECODED
        return True

    def _upscale(self, job: Job) -> bool:
        self._ahead.release()  # the next job may be prepared now
        assert job.pixels is not None
        if self.stop.is_set():
            # Stopping: only the job already on the model is finished. One prepared but
            # not started on it goes back to the queue for another worker, so the grace
            # period (terminationGracePeriodSeconds) must cover one job, never two.
            self._buffers.give(job.pixels)
            job.pixels = None
            log.info("stopping: a prepared job goes back to the queue", extra=job.context)
            self._settle(job, requeue=True)
            return False
        started = time.perf_counter()
        upscaler = self._upscaler(job.request.model)
        scale = upscaler.spec.scale
        source = job.pixels
        shape = (source.shape[0] * scale, source.shape[1] * scale, *source.shape[2:])
        out = self._buffers.take(shape, source.dtype)

        def progress(done: int, total: int) -> None:
            self._moved()
            share = done / total if total else 1.0
            job.fraction = PROGRESS_DECODED + (PROGRESS_UPSCALED - PROGRESS_DECODED) * share

        try:
            result = upscaler.upscale(source, progress=progress, out=out)
        except BaseException:
            self._buffers.give(out)
            raise
        finally:
            self._buffers.give(source)
            job.pixels = None
        if result.pixels is not out:  # resized after the network (a model's --outscale)
            self._buffers.give(out)
        job.result = result.pixels
        job.fraction = PROGRESS_UPSCALED
        job.output_pixels = result.pixels.shape[0] * result.pixels.shape[1]
        job.stages["upscale_s"] = time.perf_counter() - started
        job.stages["model_s"] = result.infer_s
        return True

    def _finish(self, job: Job) -> bool:
        assert job.result is not None
        started = time.perf_counter()
        try:
            data = encode_image(job.result, output_format(Path(job.request.result_key)))
        finally:
            self._buffers.give(job.result)
            job.result = None
        job.stages["encode_s"] = time.perf_counter() - started
        job.fraction = PROGRESS_ENCODED
        self._moved()
        storing = time.perf_counter()
        # One write (one upload on S3) with the result's sha256; the event carries both.
        # Never over a result that is there: another worker may have delivered this job
        # while this one was cut off (its message went back to the queue), and the buyer's
        # link and the job's recorded sha256 are that result's.
        key = job.request.result_key
        try:
            stored = self.storage.put(key, data, replace=False)
        except FileExistsError:
            log.warning(
                "result already stored by another attempt; kept, not replaced", extra=job.context
            )
            self._complete(job, {}, self.storage.describe(key))
            return False
        finally:
            del data
        job.stages["store_s"] = time.perf_counter() - storing
        self._complete(job, job.stages, stored)
        return False

    def _complete(self, job: Job, stages: dict[str, float], stored: StoredObject) -> None:
        self.events.publish(
            job.request,
            EventKind.COMPLETED,
            progress=1.0,
            result_key=job.request.result_key,
            result_size=stored.size,
            result_sha256=stored.sha256,
            extra={name: round(seconds, 3) for name, seconds in stages.items()},
        )
        metrics.JOBS.labels(outcome="completed").inc()
        if "upscale_s" in stages:  # not an announcement of a result stored before
            metrics.JOB_SECONDS.observe(time.monotonic() - job.received)
            metrics.MODEL_SECONDS.observe(stages.get("model_s", 0.0))
            metrics.OUTPUT_MEGAPIXELS.inc(job.output_pixels / 1e6)
            for stage in ("prepare", "upscale", "encode", "store"):
                metrics.STAGE_SECONDS.labels(stage=stage).observe(stages.get(f"{stage}_s", 0.0))
        self._settle(job)

    def _failed(self, job: Job, exc: Exception) -> None:
        """Fail ``job`` for good, or send it round again after a backoff."""
        for buffer in (job.pixels, job.result):
            if buffer is not None:
                self._buffers.give(buffer)
        job.pixels = job.result = None
        request, context = job.request, job.context
        try:
            if isinstance(exc, PERMANENT):
                metrics.JOBS.labels(outcome="failed").inc()
                log.warning("job failed for good: %s", exc, extra=context)
                self.events.publish(
                    request, EventKind.FAILED, error=_describe(exc), retryable=False
                )
            elif job.tries >= self.config.max_attempts:
                if not isinstance(exc, UpscalerError | OSError):
                    log.error("unexpected error", exc_info=exc, extra=context)
                metrics.JOBS.labels(outcome="failed").inc()
                error = f"{_describe(exc)} (after {job.tries} tries)"
                self.events.publish(request, EventKind.FAILED, error=error, retryable=True)
            else:
                delay = self.config.retry_backoff_s * 2 ** (job.tries - 1)
                log.warning(
                    "try %d failed, again in %.1fs: %s", job.tries, delay, exc, extra=context
                )
                job.tries += 1
                metrics.JOBS.labels(outcome="retried").inc()
                self._moved(delay)  # the backoff is a planned wait
                timer = threading.Timer(delay, self._inbox.put, args=(job,))
                timer.daemon = True
                timer.start()
                return
        except Exception:  # the failure could not be reported: let the broker deliver it again
            log.exception("could not report a failure", extra=context)
            self._settle(job, requeue=True)
            return
        self._settle(job)

    def _settle(self, job: Job, *, requeue: bool = False) -> None:
        if job.delivery is not None:
            if requeue:
                job.delivery.requeue()
            else:
                job.delivery.ack()  # the result is stored and announced, or the failure is
        with self._lock:
            self._in_hand.pop(id(job), None)
            if not requeue:
                self.jobs_done += 1
        self._moved()
        if self.config.max_jobs and self.jobs_done >= self.config.max_jobs:
            self.stop.set()

    def _report(self) -> None:
        """Progress as it moves, and a heartbeat for every job in hand."""
        interval = max(self.config.progress_interval_s, REPORT_POLL_S)
        last_beat = time.monotonic()
        while not self._finished.wait(interval):
            beat = time.monotonic() - last_beat >= self.config.heartbeat_s
            last_beat = time.monotonic() if beat else last_beat
            with self._lock:
                jobs = list(self._in_hand.values())
            for job in jobs:
                if beat or job.fraction != job.reported:
                    job.reported = job.fraction
                    try:
                        self.events.publish(job.request, EventKind.PROGRESS, progress=job.fraction)
                    except Exception:  # a missed report is not worth the job
                        log.warning("progress not sent", exc_info=True, extra=job.context)

    def _result_stored(self, key: str) -> bool:
        try:
            return self.storage.exists(key)
        except OSError:  # storage unreachable: reading the source fails too, and is retried
            log.warning("cannot tell whether %s is stored", key, exc_info=True)
            return False

    def precision(self) -> PrecisionChoice | None:
        """The precision the default model runs paid jobs in, and why (``None`` until loaded)."""
        upscaler = self._upscalers.get((self.registry.get().name, self.config.precision))
        return upscaler.precision_choice if upscaler else None

    def precisions(self) -> list[dict[str, Any]]:
        """Each loaded model's precision, why, and what it serves (``/readyz`` shows them)."""
        return [
            {
                "model": model,
                "for": self._uses(setting),
                "precision": upscaler.precision,
                "reason": upscaler.precision_choice.reason,
            }
            for (model, setting), upscaler in list(self._upscalers.items())
        ]

    def _uses(self, setting: str) -> list[str]:
        settings = (("jobs", self.config.precision), ("previews", self.config.preview_precision))
        return [use for use, wanted in settings if wanted == setting]

    def _upscaler(self, model: str, precision: str | None = None) -> Upscaler:
        """``model`` loaded in ``precision`` (a setting: paid jobs' unless given)."""
        key = (model, precision or self.config.precision)
        if key not in self._upscalers:
            upscaler = Upscaler.load(
                self.registry,
                model,
                device=self.config.device,
                precision=key[1],
                options=self.config.overrides(),
                compile=self.config.compile,
            )
            metrics.record_precision(model, self._uses(key[1]), upscaler.precision_choice)
            self._upscalers[key] = upscaler
        return self._upscalers[key]


class HostBuffers:
    """Host arrays for images in flight; on a GPU worker page-locked and reused.

    Allocating and page-locking 192 MB for every 8000x8000 output costs more
    than the copy it speeds up, so page-locked arrays are handed back after
    use and handed out again for the next image of the same shape. On the
    CPU they are plain arrays, made as needed.
    """

    KEEP = 4  # arrays kept for reuse; more in flight are simply allocated

    def __init__(self, *, pinned: bool) -> None:
        self.pinned = pinned
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        with self._lock:
            for index, array in enumerate(self._free):
                if array.shape == shape and array.dtype == dtype:
                    return self._free.pop(index)
        if not self.pinned:
            return np.empty(shape, dtype=dtype)
        tensor = torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], pin_memory=True)
        return tensor.numpy()

    def copy_of(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` in a buffer of ours (page-locked on a GPU worker)."""
        if not self.pinned:
            return np.ascontiguousarray(pixels)
        buffer = self.take(pixels.shape, pixels.dtype)
        np.copyto(buffer, pixels)
        return buffer

    def give(self, array: np.ndarray) -> None:
        """Done with ``array``: keep it for the next image of its shape (page-locked ones only;
        plain arrays cost nothing to make again and would only hold memory)."""
        if not self.pinned:
            return
        with self._lock:
            if len(self._free) >= self.KEEP:
                self._free.pop(0)
            self._free.append(array)


_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
