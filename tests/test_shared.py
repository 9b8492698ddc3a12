"""The wire contract: job states, message schemas, topology."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.jobs import (
    ALLOWED_TRANSITIONS,
    FINAL_STATES,
    IllegalTransitionError,
    JobStatus,
    can_transition,
    check_transition,
)
from shared.messages import EventKind, JobEvent, MessageError, UpscaleRequest
from shared.storage import Storage
from shared.topology import ALL_QUEUES, DEAD_LETTER_EXCHANGE, UPSCALE_QUEUE


def test_every_state_has_its_transitions_listed():
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)


def test_the_paid_path_and_the_refund_path_are_allowed():
    path = ["awaiting_payment", "pending", "processing", "failed", "refunding", "refunded"]
    for current, wanted in itertools.pairwise(map(JobStatus, path)):
        check_transition(current, wanted)
    check_transition(JobStatus.PROCESSING, JobStatus.COMPLETED)
    check_transition(JobStatus.AWAITING_PAYMENT, JobStatus.EXPIRED)


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("completed", "expired"),  # an expiry after payment changes nothing
        ("pending", "awaiting_payment"),
        ("refunded", "refunding"),  # never a second refund
        ("expired", "pending"),
        ("awaiting_payment", "completed"),
    ],
)
def test_backwards_and_skipping_moves_are_refused(current, wanted):
    with pytest.raises(IllegalTransitionError, match=f"from {current} to {wanted}"):
        check_transition(JobStatus(current), JobStatus(wanted))


def test_final_states_lead_nowhere_but_to_an_admin_or_to_what_stripe_reports():
    stripe_or_admin = {
        JobStatus.REFUNDING,  # an admin's refund
        JobStatus.PENDING,  # an admin's retry
        JobStatus.REFUNDED,  # refunded at Stripe
        JobStatus.REFUND_FAILED,  # Stripe reports a refund failed after all
        JobStatus.DISPUTED,  # the buyer's bank disputes the payment
    }
    for state in FINAL_STATES:
        assert ALLOWED_TRANSITIONS[state] <= stripe_or_admin, state
        assert state.is_final
    # Never a second refund: a refunded job only learns that its refund failed.
    assert ALLOWED_TRANSITIONS[JobStatus.REFUNDED] == frozenset({JobStatus.REFUND_FAILED})
    # An expired job is refunded if a payment arrives after all; nothing else.
    assert ALLOWED_TRANSITIONS[JobStatus.EXPIRED] == frozenset({JobStatus.REFUNDING})


@given(st.sampled_from(list(JobStatus)), st.sampled_from(list(JobStatus)))
def test_can_transition_agrees_with_check(current, wanted):
    try:
        check_transition(current, wanted)
        assert can_transition(current, wanted)
    except IllegalTransitionError:
        assert not can_transition(current, wanted)


def test_request_round_trips_as_json_with_its_schema():
    request = UpscaleRequest("j1", "jobs/j1/source.png", "jobs/j1/result.png", attempt=2)
    body = request.to_json()
    assert '"schema":"smi.upscale-request.v1"' in body
    assert UpscaleRequest.from_json(body) == request
    assert UpscaleRequest.from_json(body.encode()) == request


def test_event_round_trips():
    event = JobEvent("j1", EventKind.COMPLETED, "e1", result_key="jobs/j1/result.png")
    assert JobEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "body",
    [
        b"\x80\x04pickle",
        "[]",
        '{"schema": "smi.upscale-request.v2", "job_id": "j", "source_key": "s", "result_key": "r"}',
        '{"schema": "smi.upscale-request.v1", "job_id": "j", "source_key": "s"}',
        '{"schema": "smi.upscale-request.v1", "job_id": "j", "source_key": "s", '
        '"result_key": "r", "surprise": 1}',
        '{"schema": "smi.upscale-request.v1", "job_id": 5, "source_key": "s", "result_key": "r"}',
        '{"schema": "smi.upscale-request.v1", "job_id": "", "source_key": "s", "result_key": "r"}',
        '{"schema": "smi.upscale-request.v1", "job_id": "j", "source_key": "s", '
        '"result_key": "r", "attempt": true}',
    ],
)
def test_malformed_requests_are_refused(body):
    with pytest.raises(MessageError):
        UpscaleRequest.from_json(body)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "exploded"},
        {"kind": "progress", "progress": 1.5},
        {"kind": "completed"},
        {"kind": "failed"},
        {"kind": "completed", "result_key": "r", "result_size": -1},
        {"kind": "completed", "result_key": "r", "result_size": True},
        {"kind": "completed", "result_key": "r", "result_size": "12"},
        {"kind": "completed", "result_key": "r", "result_sha256": "ABC"},
        {"kind": "completed", "result_key": "r", "result_sha256": "0" * 63 + "G"},
    ],
)
def test_malformed_events_are_refused(fields):
    event = {"schema": "smi.job-event.v1", "job_id": "j", "event_id": "e", **fields}
    with pytest.raises(MessageError):
        JobEvent.from_json(event)


def test_a_completed_event_carries_the_result_s_size_and_digest_or_not():
    """Both optional: an event from a worker older than them still parses."""
    digest = "ab" * 32
    event = JobEvent(
        "j", EventKind.COMPLETED, "e", result_key="r", result_size=7, result_sha256=digest
    )
    assert JobEvent.from_json(event.to_json()) == event
    old = {"schema": "smi.job-event.v1", "job_id": "j", "event_id": "e", "kind": "completed"}
    parsed = JobEvent.from_json({**old, "result_key": "r"})
    assert parsed.result_size is None and parsed.result_sha256 is None


def test_a_write_that_must_not_replace_leaves_a_local_object_as_it_is(tmp_path):
    """A late worker's result is not written over a delivered one (``replace=False``); the
    default still replaces. No temporary file is left either way."""
    storage = Storage(f"file://{tmp_path}")
    first = storage.put("jobs/j1/result.png", b"first", replace=False)
    with pytest.raises(FileExistsError):
        storage.put("jobs/j1/result.png", b"late", replace=False)
    assert storage.get("jobs/j1/result.png") == b"first" and first.size == 5
    assert [p.name for p in (tmp_path / "jobs" / "j1").iterdir()] == ["result.png"]
    storage.put("jobs/j1/result.png", b"replaced")
    assert storage.get("jobs/j1/result.png") == b"replaced"


def test_work_queues_dead_letter_and_everything_is_durable():
    assert UPSCALE_QUEUE.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE.name
    assert all(queue.durable for queue in ALL_QUEUES)


def test_the_gateway_and_the_workers_read_each_model_from_one_manifest():
    import json

    from gateway.languages import LANGUAGES
    from shared.models import DEFAULT_MODEL, MODELS
    from upscaler.models.archs import ARCHITECTURES
    from upscaler.models.registry import ModelRegistry

    registry = ModelRegistry.from_env({})
    # Both ways: every model the gateway sells is one a worker builds, and the reverse.
    assert {spec.name for spec in registry} == set(MODELS)
    assert registry.default_name == DEFAULT_MODEL
    for spec in registry:
        assert (spec.scale, spec.description) == (
            MODELS[spec.name].scale,
            MODELS[spec.name].description,
        )
    # Every architecture runs some model; every kind has a label in every language.
    assert {spec.arch.name for spec in registry} == set(ARCHITECTURES)
    i18n = Path(__file__).resolve().parent.parent / "gateway" / "static" / "i18n"
    for language in LANGUAGES:
        labels = json.loads((i18n / f"{language}.json").read_text())
        assert {f"model.{info.kind}" for info in MODELS.values()} <= labels.keys(), language


def test_a_model_of_an_unknown_kind_is_refused(tmp_path, monkeypatch):
    import shared.models

    manifest = shared.models.MANIFEST.read_text().replace('kind = "photo"', 'kind = "painting"', 1)
    (tmp_path / "models.toml").write_text(manifest)
    monkeypatch.setattr(shared.models, "MANIFEST", tmp_path / "models.toml")
    with pytest.raises(ValueError, match="painting"):
        shared.models._load()


def test_log_lines_carry_what_the_call_passed_in_extra(capsys, monkeypatch):
    import json
    import logging

    from shared.logs import configure_service_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv("SMI_LOG_FORMAT", "json")
        configure_service_logging()
        logging.getLogger("gateway.money.refunds").error(
            "refund failed; an admin must act", extra={"job_id": "job_x", "error": "card lost"}
        )
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["message"] == "refund failed; an admin must act"
        assert (line["job_id"], line["error"], line["level"]) == ("job_x", "card lost", "ERROR")

        monkeypatch.setenv("SMI_LOG_FORMAT", "text")
        configure_service_logging()
        logging.getLogger("x").warning("stalled", extra={"job_id": "job_y"})
        assert capsys.readouterr().err.strip().endswith("x: stalled job_id=job_y")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
