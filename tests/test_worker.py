"""The upscaling worker against a real broker (embedded and RabbitMQ) with real weights."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from conftest import FAST_MODEL, RABBITMQ_URL, purge_queues, sample
from servers import wait_for
from shared.broker import Broker, _Consumer
from shared.env import ConfigError
from shared.images import decode_image
from shared.messages import EventKind, JobEvent, PreviewRequest, UpscaleRequest
from shared.storage import Storage, StoredObject
from shared.topology import DEAD_QUEUE, EVENTS_QUEUE, PREVIEW_QUEUE, UPSCALE_QUEUE
from upscaler.output.images import encode_image
from upscaler.pipeline.options import PipelineOptions, default_options
from upscaler.worker.config import WorkerConfig
from upscaler.worker.loop import PROGRESS_DECODED, EventPublisher, UpscaleWorker
from upscaler.worker.metrics import serve_health

BIN = Path(sys.executable).parent


@pytest.fixture(params=["embedded", "rabbitmq"])
def broker_url(request, tmp_path) -> Iterator[str]:
    if request.param == "embedded":
        yield f"filesystem://{tmp_path / 'broker'}"
        return
    purge_queues()
    yield RABBITMQ_URL
    purge_queues()


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(f"file://{tmp_path / 'storage'}")


def config_for(broker_url: str, storage: Storage, **changes) -> WorkerConfig:
    config = WorkerConfig.from_env(
        {
            "SMI_BROKER_URL": broker_url,
            "SMI_STORAGE_URL": storage.url,
            "SMI_WORKER_DEVICE": "cpu",
            "SMI_WORKER_TILE": "32",
            "SMI_WORKER_RETRY_BACKOFF_S": "0.01",
            "SMI_WORKER_PROGRESS_INTERVAL_S": "0",
        }
    )
    return dataclasses.replace(config, **changes)


def submit(broker_url: str, body: str, message_id: str = "test") -> None:
    broker = Broker(broker_url)
    broker.publish(UPSCALE_QUEUE, body, message_id=message_id)
    broker.close()


def run_worker(broker_url: str, storage: Storage, registry, jobs: int, **changes) -> UpscaleWorker:
    """A worker in a thread until it has handled ``jobs`` messages."""
    config = config_for(broker_url, storage, max_jobs=jobs, **changes)
    broker = Broker(broker_url)
    events = EventPublisher(broker, "test-worker")
    worker = UpscaleWorker(broker, storage, registry, config, events=events)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the worker did not finish its jobs"
    broker.close()
    return worker


def received(broker_url: str, queue, count: int | None, timeout: float = 10) -> list:
    """``count`` raw messages from ``queue`` (acknowledged); ``None``: all until it stays empty."""
    messages: list = []

    def keep(message) -> None:
        messages.append(message)
        message.ack()

    connection = Broker(broker_url).connection()
    with connection, connection.Consumer([queue], on_message=keep, prefetch_count=1):
        deadline = time.monotonic() + timeout
        while count is None or len(messages) < count:
            try:
                connection.drain_events(timeout=0.5 if count is None else 1)
            except TimeoutError:
                if count is None:
                    break
                if time.monotonic() > deadline:
                    raise
    return messages


def events_of(broker_url: str, count: int | None, timeout: float = 10) -> list[JobEvent]:
    return [JobEvent.from_json(m.body) for m in received(broker_url, EVENTS_QUEUE, count, timeout)]


def photo(storage: Storage, key: str, size: int = 24) -> np.ndarray:
    pixels = np.ascontiguousarray(sample("chelsea")[100 : 100 + size, 180 : 180 + size])
    storage.put(key, encode_image(pixels, "png"))
    return pixels


def test_a_job_is_upscaled_stored_and_reported(broker_url, storage, registry):
    pixels = photo(storage, "jobs/j1/source.png", size=40)
    request = UpscaleRequest("j1", "jobs/j1/source.png", "jobs/j1/result.png")
    submit(broker_url, request.to_json())
    # Nine windows of 24x24, each long enough for the reporter to see the job move.
    run_worker(broker_url, storage, registry, jobs=1, tile=16, overlap=4)

    result = decode_image(storage.get("jobs/j1/result.png")).pixels
    assert result.shape == (160, 160, 3)
    # Real weights: the result is a sharp 4x of the photo, close to it when shrunk back.
    shrunk = result.reshape(40, 4, 40, 4, 3).mean(axis=(1, 3))
    assert np.abs(shrunk - pixels).mean() < 6
    # The embedded broker orders messages by the millisecond only: compare as a set.
    events = {event.kind: event for event in events_of(broker_url, None)}
    assert set(events) == {EventKind.STARTED, EventKind.PROGRESS, EventKind.COMPLETED}
    completed = events[EventKind.COMPLETED]
    assert completed.result_key == "jobs/j1/result.png" and completed.worker == "test-worker"
    stored = storage.get("jobs/j1/result.png")  # what the gateway checks the download against
    assert completed.result_size == len(stored)
    assert completed.result_sha256 == hashlib.sha256(stored).hexdigest()
    with Broker(broker_url).connection() as connection:  # acknowledged: nothing left
        assert connection.SimpleQueue(UPSCALE_QUEUE).qsize() == 0


def test_a_stored_result_is_announced_again_without_recomputing(broker_url, storage, registry):
    storage.put("jobs/j2/result.png", b"already here")  # the source is not even needed
    submit(broker_url, UpscaleRequest("j2", "jobs/j2/source.png", "jobs/j2/result.png").to_json())
    run_worker(broker_url, storage, registry, jobs=1)
    events = {event.kind: event for event in events_of(broker_url, None)}
    assert sorted(events) == [EventKind.COMPLETED, EventKind.STARTED]
    assert storage.get("jobs/j2/result.png") == b"already here"
    completed = events[EventKind.COMPLETED]
    assert completed.result_size == len(b"already here")
    assert completed.result_sha256 == hashlib.sha256(b"already here").hexdigest()


def test_a_result_stored_while_upscaling_is_kept_and_announced(storage, registry, tmp_path):
    """Another worker delivered the job while this one worked on it (its link was cut and
    the broker gave the job away): the result it finishes with is not written over the one
    stored, which it announces as it is."""
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    photo(storage, "jobs/j3/source.png")
    submit(broker_url, UpscaleRequest("j3", "jobs/j3/source.png", "jobs/j3/result.png").to_json())
    config = config_for(broker_url, storage, max_jobs=1)
    broker = Broker(broker_url)
    worker = UpscaleWorker(
        broker, storage, registry, config, events=EventPublisher(broker, "test-worker")
    )
    worker.warm_up()
    (upscaler,) = worker._upscalers.values()
    network = upscaler.network

    def delivered_meanwhile(windows: torch.Tensor) -> torch.Tensor:
        if not storage.exists("jobs/j3/result.png"):
            storage.put("jobs/j3/result.png", b"delivered by another worker")
        return network(windows)

    upscaler.network = delivered_meanwhile
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the worker did not finish its job"
    broker.close()
    assert storage.get("jobs/j3/result.png") == b"delivered by another worker"
    completed = [e for e in events_of(broker_url, None) if e.kind == EventKind.COMPLETED]
    assert [(e.result_size, e.result_sha256) for e in completed] == [
        (27, hashlib.sha256(b"delivered by another worker").hexdigest())
    ]


def test_on_s3_the_result_is_one_upload_reported_with_its_digest(
    s3_server, s3_url, registry, tmp_path
):
    """The worker reads its source from S3 and writes its result there in one request (no
    temporary key copied into place: S3 has no rename), its sha256 beside it."""
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    storage = Storage(s3_url)
    photo(storage, "jobs/s3/source.png", size=16)
    submit(broker_url, UpscaleRequest("s3", "jobs/s3/source.png", "jobs/s3/result.png").to_json())
    before = len(s3_server.requests(settle_s=0.3))
    run_worker(broker_url, storage, registry, jobs=1, tile=0)
    written = [
        (r.method, r.path.rsplit("/", 2)[-2:])
        for r in s3_server.requests(settle_s=0.3)[before:]
        if r.method in ("PUT", "POST", "DELETE")
    ]
    assert written == [("PUT", ["s3", "result.png"])]
    events = {event.kind: event for event in events_of(broker_url, None)}
    stored = storage.get("jobs/s3/result.png")
    assert decode_image(stored).pixels.shape == (64, 64, 3)
    completed = events[EventKind.COMPLETED]
    assert completed.result_size == len(stored)
    assert completed.result_sha256 == hashlib.sha256(stored).hexdigest()
    assert storage.stat("jobs/s3/result.png").sha256 == completed.result_sha256


@pytest.mark.parametrize(
    ("source", "model", "error"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, None, "Image"),
        (None, None, "SourceMissingError"),
        ("photo", "no-such-model", "UnknownModelError"),
    ],
)
def test_permanent_errors_fail_the_job_at_once(storage, registry, tmp_path, source, model, error):
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    if source == "photo":
        photo(storage, "jobs/j3/source.png")
    elif source is not None:
        storage.put("jobs/j3/source.png", source)
    request = UpscaleRequest(
        "j3", "jobs/j3/source.png", "jobs/j3/result.png", model=model or FAST_MODEL
    )
    submit(broker_url, request.to_json())
    run_worker(broker_url, storage, registry, jobs=1, max_attempts=3)
    (failed,) = [e for e in events_of(broker_url, None) if e.kind != EventKind.STARTED]
    assert failed.kind == EventKind.FAILED and error in failed.error
    assert not failed.retryable and "tries" not in failed.error  # no retries for these
    assert not storage.exists("jobs/j3/result.png")


def test_other_errors_are_retried_then_fail_the_job(storage, registry, tmp_path):
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    (tmp_path / "storage" / "jobs" / "j4" / "source.png").mkdir(parents=True)  # unreadable
    submit(broker_url, UpscaleRequest("j4", "jobs/j4/source.png", "jobs/j4/result.png").to_json())
    run_worker(broker_url, storage, registry, jobs=1, max_attempts=3)
    (failed,) = [e for e in events_of(broker_url, None) if e.kind != EventKind.STARTED]
    assert failed.kind == EventKind.FAILED and failed.retryable
    assert "after 3 tries" in failed.error


def test_undecodable_messages_go_to_the_dead_letter_queue(broker_url, storage, registry):
    photo(storage, "jobs/j5/source.png", size=16)
    submit(broker_url, '{"schema": "something-else"}', message_id="bad-1")
    submit(broker_url, "not json at all", message_id="bad-2")
    time.sleep(0.05)  # the embedded broker orders by the millisecond: the good job comes last
    request = UpscaleRequest("j5", "jobs/j5/source.png", "jobs/j5/result.png", model=FAST_MODEL)
    submit(broker_url, request.to_json())
    run_worker(broker_url, storage, registry, jobs=1)  # the bad ones do not count, nor crash it
    assert storage.exists("jobs/j5/result.png")
    dead = received(broker_url, DEAD_QUEUE, 2)
    assert {m.headers["x-smi-origin"] for m in dead} == {"smi.upscale"}
    assert any("schema" in m.headers["x-smi-reason"] for m in dead)


def test_sigterm_lets_the_current_job_finish(tmp_path, storage, registry):
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    photo(storage, "jobs/j6/source.png", size=160)  # long enough on the model to be seen there
    submit(broker_url, UpscaleRequest("j6", "jobs/j6/source.png", "jobs/j6/result.png").to_json())
    worker = subprocess.Popen(
        [BIN / "smi-worker", "--device", "cpu", "--tile", "32"],
        env={
            **os.environ,
            "SMI_BROKER_URL": broker_url,
            "SMI_STORAGE_URL": storage.url,
            "SMI_WORKER_PROGRESS_INTERVAL_S": "0",
        },
        stderr=subprocess.PIPE,
        text=True,
    )
    assert events_of(broker_url, 1, timeout=120)[0].kind == EventKind.STARTED
    # On the model (a tile done, past decoding): the job in hand. One only decoded when the
    # signal comes goes back to the queue instead (a test of its own, below).
    seen: list[JobEvent] = []
    while not any(
        e.kind == EventKind.PROGRESS and (e.progress or 0) > PROGRESS_DECODED for e in seen
    ):
        seen += events_of(broker_url, 1, timeout=120)
        assert EventKind.COMPLETED not in {e.kind for e in seen}, seen
    worker.send_signal(signal.SIGTERM)  # mid-job
    _, errors = worker.communicate(timeout=180)
    assert worker.returncode == 0, errors
    assert storage.exists("jobs/j6/result.png")
    assert "stopping after the jobs in hand" in errors
    assert EventKind.COMPLETED in {e.kind for e in events_of(broker_url, None)}


def test_lanes_are_configured_for_the_cpu_and_refused_for_cuda(storage, registry):
    base = {"SMI_STORAGE_URL": storage.url, "SMI_WORKER_DEVICE": "cpu"}
    spec = registry.get()

    def options(environ: dict[str, str]) -> PipelineOptions:
        return default_options("cpu", spec, "fp32", WorkerConfig.from_env(environ).overrides())

    assert options({**base, "SMI_WORKER_LANES": "1"}).lanes == 1
    assert options(base).lanes == min(2, torch.get_num_threads())
    with pytest.raises(ConfigError, match="SMI_WORKER_LANES > 1 is for the CPU"):
        WorkerConfig.from_env({**base, "SMI_WORKER_DEVICE": "cuda", "SMI_WORKER_LANES": "2"})


def submit_photos(broker_url: str, storage: Storage, prefix: str, count: int, **kw) -> None:
    """``count`` jobs named ``{prefix}0``... of small photo crops, queued in order."""
    size = kw.pop("size", 24)
    for index in range(count):
        job = f"{prefix}{index}"
        photo(storage, f"jobs/{job}/source.png", size=size)
        request = UpscaleRequest(job, f"jobs/{job}/source.png", f"jobs/{job}/result.png", **kw)
        submit(broker_url, request.to_json(), message_id=job)


def test_pipelined_jobs_overlap_and_each_completes_once(storage, registry):
    """While one job is on the device, the next is already being prepared."""
    purge_queues()
    submit_photos(RABBITMQ_URL, storage, "p", 3, size=32)
    run_worker(RABBITMQ_URL, storage, registry, jobs=3, tile=16, overlap=4)
    events = events_of(RABBITMQ_URL, None)  # one connection: RabbitMQ keeps their order
    order = [(e.kind, e.job_id) for e in events if e.kind != EventKind.PROGRESS]
    completed = [job for kind, job in order if kind == EventKind.COMPLETED]
    assert sorted(completed) == ["p0", "p1", "p2"]
    # Some job started before the one ahead of it had completed.
    started_at = {job: i for i, (kind, job) in enumerate(order) if kind == EventKind.STARTED}
    completed_at = {job: i for i, (kind, job) in enumerate(order) if kind == EventKind.COMPLETED}
    assert any(
        started_at[later] < completed_at[earlier]
        for earlier, later in itertools.pairwise(sorted(started_at, key=started_at.get))
    ), order
    with Broker(RABBITMQ_URL).connection() as connection:
        assert connection.SimpleQueue(UPSCALE_QUEUE).qsize() == 0
    purge_queues()


def test_one_job_at_a_time_when_not_pipelined(storage, registry, tmp_path):
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    submit_photos(broker_url, storage, "s", 2, size=16, model=FAST_MODEL)
    worker = run_worker(broker_url, storage, registry, jobs=2, pipeline=False)
    assert worker.jobs_done == 2
    assert all(storage.exists(f"jobs/s{index}/result.png") for index in range(2))


def test_a_stopping_worker_hands_back_what_it_has_not_started(storage, registry):
    """Stopped after one job with more prefetched: each job is done once or still queued."""
    purge_queues()
    submit_photos(RABBITMQ_URL, storage, "h", 4)
    run_worker(RABBITMQ_URL, storage, registry, jobs=1)
    events = events_of(RABBITMQ_URL, None)
    completed = [e.job_id for e in events if e.kind == EventKind.COMPLETED]
    started = {e.job_id for e in events if e.kind == EventKind.STARTED}
    # Started (a STARTED event) and not completed: prepared, then handed back, not lost.
    assert len(completed) == len(set(completed)) and set(completed) <= started
    with Broker(RABBITMQ_URL).connection() as connection:
        left = connection.SimpleQueue(UPSCALE_QUEUE).qsize()
    assert len(completed) + left == 4 and left >= 1
    purge_queues()


def test_on_sigterm_the_job_on_the_model_finishes_and_the_prepared_one_goes_back(storage, registry):
    """Stopped while one job is on the model and the next is prepared: the first finishes;
    the second (decoded, never on the model) and every other goes back to the queue."""
    purge_queues()
    submit_photos(RABBITMQ_URL, storage, "d", 4, size=64)  # seconds each on the model
    config = config_for(RABBITMQ_URL, storage, tile=16, overlap=4)
    broker = Broker(RABBITMQ_URL)
    worker = UpscaleWorker(broker, storage, registry, config, events=EventPublisher(broker, "w"))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    seen: list[JobEvent] = []
    while len({e.job_id for e in seen if e.kind == EventKind.STARTED}) < 2:
        seen += events_of(RABBITMQ_URL, 1, timeout=120)  # the second is prepared only once
    worker.stop.set()  # what SIGTERM does            # the first is on the model
    thread.join(timeout=180)
    assert not thread.is_alive()
    broker.close()
    seen += events_of(RABBITMQ_URL, None)
    assert [e.job_id for e in seen if e.kind == EventKind.COMPLETED] == ["d0"]
    assert not [e for e in seen if e.kind == EventKind.FAILED]
    assert not storage.exists("jobs/d1/result.png")
    with Broker(RABBITMQ_URL).connection() as connection:
        assert connection.SimpleQueue(UPSCALE_QUEUE).qsize() == 3  # d1, d2, d3 back
    purge_queues()


class FlakyStorage(Storage):
    """Storage that is away (every call raises ``OSError``) until ``back`` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.back = threading.Event()
        self.refused = 0

    def get(self, key: str) -> bytes:
        self._answer()
        return super().get(key)

    def put(self, key: str, data: bytes, *, replace: bool = True) -> StoredObject:
        self._answer()
        return super().put(key, data, replace=replace)

    def _answer(self) -> None:
        if not self.back.is_set():
            self.refused += 1
            raise OSError("connection refused (storage away)")


def test_while_storage_is_away_the_worker_takes_no_job_and_fails_none(
    tmp_path, registry, monkeypatch
):
    monkeypatch.setattr("upscaler.worker.loop.STORAGE_RETRY_S", 0.1)
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    good = Storage(f"file://{tmp_path / 'storage'}")
    photo(good, "jobs/j1/source.png")
    submit(broker_url, UpscaleRequest("j1", "jobs/j1/source.png", "jobs/j1/result.png").to_json())
    flaky = FlakyStorage(good.url)
    threading.Timer(2.0, flaky.back.set).start()  # far more than max_attempts tries' worth
    worker = run_worker(broker_url, flaky, registry, jobs=1, max_attempts=2)
    assert flaky.refused > 2 and worker.readiness()["storage"] is None
    kinds = [event.kind for event in events_of(broker_url, None)]
    assert EventKind.FAILED not in kinds and EventKind.COMPLETED in kinds
    assert good.exists("jobs/j1/result.png")


def test_healthz_fails_while_the_job_in_hand_hangs_and_one_tile_still_shows_progress(
    tmp_path, storage, registry
):
    """A model pass that never returns (a hung GPU) makes /healthz fail after the stall bound,
    although the reporter thread still beats; an idle worker polling for messages stays live.
    The job, one tile, shows progress past 0 while its model pass runs."""
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    photo(storage, "jobs/h1/source.png")  # 24x24: one 32px tile
    config = config_for(broker_url, storage, stall_s=1.0, heartbeat_s=0.2)
    broker = Broker(broker_url)
    worker = UpscaleWorker(
        broker, storage, registry, config, events=EventPublisher(broker, "test-worker")
    )
    worker.warm_up()
    (upscaler,) = worker._upscalers.values()
    network, entered, release = upscaler.network, threading.Event(), threading.Event()

    def hung(windows: torch.Tensor) -> torch.Tensor:
        entered.set()
        release.wait(120)
        return network(windows)

    upscaler.network = hung
    server = serve_health(0, worker.readiness, worker.liveness, host="127.0.0.1")
    healthz = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(2.5)  # idle for longer than the bound: its polling is its progress
        assert httpx.get(healthz, timeout=10).status_code == 200
        submit(broker_url, UpscaleRequest("h1", "jobs/h1/source.png", "jobs/h1/r.png").to_json())
        assert entered.wait(60), "the job never reached the model"
        time.sleep(2.5)
        stuck = httpx.get(healthz, timeout=10)
        assert stuck.status_code == 503, stuck.text
        assert "1 job(s) in hand" in stuck.json()["stuck"]
        release.set()
        deadline = time.monotonic() + 60
        while not storage.exists("jobs/h1/r.png") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert storage.exists("jobs/h1/r.png")
        assert httpx.get(healthz, timeout=10).status_code == 200
    finally:
        release.set()
        worker.stop.set()
        thread.join(timeout=60)
        server.shutdown()
        broker.close()
    events = events_of(broker_url, None)
    # Heartbeats went on while it hung: only /healthz tells the hang.
    beats = [e for e in events if e.kind == EventKind.PROGRESS]
    assert len(beats) >= 5
    assert any(0 < (e.progress or 0) < 1 for e in beats)  # one tile, yet not 0 until done
    assert EventKind.COMPLETED in {e.kind for e in events}


def test_broker_heartbeats_are_a_setting_of_the_consuming_connections():
    """The broker takes a silent worker's jobs back within about two heartbeats; the
    publishing connection, idle between jobs, has none (nothing would send them)."""
    config = WorkerConfig.from_env({})
    assert config.broker_heartbeat_s == 30
    assert WorkerConfig.from_env({"SMI_WORKER_BROKER_HEARTBEAT_S": "5"}).broker_heartbeat_s == 5
    with pytest.raises(ConfigError, match="SMI_WORKER_BROKER_HEARTBEAT_S"):
        WorkerConfig.from_env({"SMI_WORKER_BROKER_HEARTBEAT_S": "-1"})
    for heartbeat_s in (5, 0):
        broker = Broker(RABBITMQ_URL, heartbeat_s=heartbeat_s)
        consumer = _Consumer(broker, UPSCALE_QUEUE, print, 1, threading.Event(), 1.0)
        assert (consumer.connection.heartbeat or 0) == heartbeat_s
        assert not broker.connection().heartbeat  # what publishes


def test_the_stall_bound_is_a_setting():
    assert WorkerConfig.from_env({}).stall_s == 600
    assert WorkerConfig.from_env({"SMI_WORKER_STALL_S": "90"}).stall_s == 90
    with pytest.raises(ConfigError, match="SMI_WORKER_STALL_S"):
        WorkerConfig.from_env({"SMI_WORKER_STALL_S": "0"})


def test_a_preview_consumer_that_dies_is_started_again_and_readiness_says_so_meanwhile(
    storage, registry, tmp_path
):
    """As when both consumers bound a fresh embedded broker at once and one read the file
    the other was writing (kombu's filesystem transport raised JSONDecodeError): the
    preview consumer dies; it is started again, /readyz says so until it is, and a preview
    asked for is then made."""
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    back = threading.Event()

    class PreviewBindFailsOnce(Broker):
        failed = False

        def consume(self, source, handle, **options) -> None:  # type: ignore[no-untyped-def]
            if source.name == PREVIEW_QUEUE.name and not self.failed:
                self.failed = True
                back.wait(timeout=30)  # until the test has seen readiness say it is down
                raise json.JSONDecodeError("Expecting value", "", 0)
            super().consume(source, handle, **options)

    config = config_for(broker_url, storage)
    broker = PreviewBindFailsOnce(broker_url)
    worker = UpscaleWorker(broker, storage, registry, config)
    worker._upscaler(FAST_MODEL)  # the model is loaded: only the consumer is in question
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        back.set()
        wait_for(lambda: worker.readiness()["previews"] is not None, timeout=30)
        assert worker.readiness()["previews"] == "the consumer is restarting"
        wait_for(lambda: worker.readiness()["previews"] is None, timeout=30)
        photo(storage, "previews/sources/x.png", size=32)
        request = PreviewRequest(
            "p" * 32, "previews/sources/x.png", "previews/pp", FAST_MODEL, 0, 0, 16
        )
        Broker(broker_url).publish(PREVIEW_QUEUE, request.to_json(), message_id="p")
        wait_for(lambda: storage.exists("previews/pp/after.png"), timeout=60)
    finally:
        worker.stop.set()
        thread.join(timeout=60)
        broker.close()
    assert not thread.is_alive()


def test_a_2x_job_without_2x_weights_is_delivered_at_2x(storage, registry, tmp_path):
    """The buyer bought 2x: the worker runs the 4x model and resizes its output (upstream's
    --outscale), and stores a picture twice the size, as it was priced."""
    broker_url = f"filesystem://{tmp_path / 'broker'}"
    photo(storage, "jobs/x2/source.png", size=24)
    request = UpscaleRequest(
        "x2", "jobs/x2/source.png", "jobs/x2/result.png", model="RealESRGAN_x2plus"
    )
    submit(broker_url, request.to_json())
    run_worker(broker_url, storage, registry, jobs=1)
    assert decode_image(storage.get("jobs/x2/result.png")).pixels.shape == (48, 48, 3)
    (completed,) = [e for e in events_of(broker_url, None) if e.kind == EventKind.COMPLETED]
    assert completed.job_id == "x2"
