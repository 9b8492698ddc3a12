"""The liveness of ``smi-gateway background``: a file its process touches while it works.

The process serves no HTTP, so the container's health check and the pod's
liveness probe read the age of ``SMI_DATA_DIR/background.alive``
(deploy/compose.yaml, deploy/k8s/gateway.yaml; the probe itself is run in
tests/test_deploy.py). Here the real ``Background.wait`` and ``Periodic``
loops: touched while they run, no longer once a step hangs or a thread ends.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import gateway.background as background_module
from gateway.background import Background
from gateway.background.loops import Periodic


def age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def run(background: Background, alive: Path) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=background.wait, args=(stop, alive, 0.05), daemon=True)
    thread.start()
    return thread, stop


def background_of(*loops: Periodic) -> Background:
    background = Background(loops=list(loops))
    for loop in loops:
        thread, stop = loop.start()
        background.threads.append(thread)
        background.stops.append(stop)
    return background


def test_the_file_is_touched_while_every_loop_turns(tmp_path):
    alive = tmp_path / "data" / "background.alive"
    background = background_of(Periodic("quick", lambda: 0, interval_s=0.01))
    thread, stop = run(background, alive)
    try:
        time.sleep(0.5)
        assert alive.exists() and age(alive) < 0.3
        time.sleep(0.5)
        assert age(alive) < 0.3
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_step_that_never_returns_stops_the_touching(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(background_module, "STUCK_S", 0.3)
    release = threading.Event()

    def hung() -> int:
        release.wait(30)
        return 0

    alive = tmp_path / "background.alive"
    background = background_of(
        Periodic("quick", lambda: 0, interval_s=0.01), Periodic("refunds", hung)
    )
    thread, stop = run(background, alive)
    try:
        time.sleep(1.5)
        assert age(alive) > 0.8  # last touched before the step had hung for 0.3 s
        assert "refunds has been in one step" in caplog.text
        release.set()  # it moves again: so does the file
        time.sleep(0.5)
        assert age(alive) < 0.3
    finally:
        release.set()
        stop.set()
        thread.join(timeout=10)


def test_a_thread_that_ended_stops_the_touching(tmp_path):
    alive = tmp_path / "background.alive"
    ended = threading.Thread(target=lambda: None, name="job-events")
    ended.start()
    ended.join()
    background = Background(threads=[ended], stops=[threading.Event()])
    thread, stop = run(background, alive)
    try:
        time.sleep(0.3)
        assert not alive.exists()
        assert background.problem() == "the job-events thread has ended"
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_a_loop_is_busy_only_inside_its_step(outcome):
    inside: list[float | None] = []

    def step() -> int:
        inside.append(loop.busy_since)
        if outcome == "raises":
            raise RuntimeError("boom")
        return 0

    loop = Periodic("seen", step, interval_s=0.01, max_backoff_s=0.01)
    thread, stop = loop.start()
    time.sleep(0.2)
    stop.set()
    thread.join(timeout=5)
    assert inside and all(since is not None for since in inside)
    assert loop.busy_since is None and loop.stuck_for() == 0.0
