"""One run of each part of ``bin/bench alerts``: the evaluation backlog and the latency run."""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
from typing import Any

import psutil

from bench.common import BenchError
from bench.harness import (
    Harness,
    celery_wait_drained,
    device_tokens_file,
    epoch_ms,
    ingestion_line,
    latency,
    paced_load_finish,
    paced_load_measure,
    paced_load_start,
    paced_load_stop,
    paced_load_summary,
    traced_responses,
)
from bench.ingest_run import INGEST_PATH, _task_failures, bedside_vitals
from bench.listener import GroupListener
from bench.processes import (
    CpuMeter,
    Service,
    celery_start,
    daphne_start,
    free_port,
    listening_process,
    machine_busy_seconds,
)

BACKLOG_PREFIX = "backlog-"
INSERT_CHUNK = 1000
POLL_SECONDS = 0.1
# How long a desaturating device sends the low value: the rule fires on the reading 10 s
# after the first low one, and five more low readings leave room for a late tick.
LOW_SECONDS = 15.0
FIRST_COHORT_AT = 3.0  # seconds into the measured window
FIRED_WAIT_SECONDS = 15.0  # after the load, for the last firings to arrive


# --- (a) throughput -------------------------------------------------------------------------


def backlog_store(*, patients: int, messages: int, seed: int = 7) -> list[int]:
    """Store ``messages`` device messages of six readings, not evaluated, for the first
    ``patients`` bench beds, interleaved in time like real traffic (second by second, every
    patient once); return their primary keys in order. Raw multi-row INSERTs: the ingestion
    service would take minutes and measure ingestion, not evaluation."""
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.hospital import bench_alert_state_clear, bench_devices_ensure, bench_readings_clear
    from monitoring.models import IngestMessage, Observation
    from patients.models import Admission

    bench_readings_clear()
    bench_alert_state_clear()
    devices = bench_devices_ensure(count=patients)
    patient_of_bed = dict(
        Admission.objects.filter(
            bed_id__in=[d.bed_id for d in devices], discharged_at__isnull=True
        ).values_list("bed_id", "patient_id")
    )
    vitals = bedside_vitals()
    rng = random.Random(seed)
    seconds = -(-messages // patients)
    now = timezone.now().replace(tzinfo=None)  # naive UTC, as the service inserts
    start = now - dt.timedelta(seconds=seconds + 5)
    quote = connection.ops.quote_name
    message_table = quote(IngestMessage._meta.db_table)
    observation_table = quote(Observation._meta.db_table)
    plan = [(i % patients, i // patients) for i in range(messages)]
    with transaction.atomic(), connection.cursor() as cursor:
        for chunk_start in range(0, messages, INSERT_CHUNK):
            rows = [
                (
                    devices[p].pk,
                    f"{BACKLOG_PREFIX}{i}",
                    "",
                    "{}",
                    len(vitals),
                    start + dt.timedelta(seconds=s, milliseconds=50),
                )
                for i, (p, s) in enumerate(
                    plan[chunk_start : chunk_start + INSERT_CHUNK], chunk_start
                )
            ]
            cursor.executemany(
                f"INSERT INTO {message_table} (device_id, message_id, body_digest, response,"  # noqa: S608 - names from model metadata
                " observation_count, received_at) VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
        cursor.execute(
            f"SELECT id, message_id FROM {message_table} WHERE message_id LIKE %s",  # noqa: S608
            [f"{BACKLOG_PREFIX}%"],
        )
        pk_of = {int(message_id.removeprefix(BACKLOG_PREFIX)): pk for pk, message_id in cursor}
        readings = []
        for i, (p, s) in enumerate(plan):
            device = devices[p]
            at = start + dt.timedelta(seconds=s)
            for vital in vitals:
                value = round(rng.uniform(vital["low"], vital["high"]), vital["decimals"])
                readings.append(
                    (
                        device.pk,
                        patient_of_bed[device.bed_id],
                        pk_of[i],
                        vital["code"],
                        value,
                        vital["unit"],
                        at,
                        at + dt.timedelta(milliseconds=50),
                        False,
                    )
                )
        for chunk_start in range(0, len(readings), INSERT_CHUNK):
            cursor.executemany(
                f"INSERT INTO {observation_table} (device_id, patient_id, message_id, code,"  # noqa: S608
                " value, unit, observed_at, received_at, artifact)"
                # Placeholders only: MySQLdb sends one multi-row INSERT only then.
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                readings[chunk_start : chunk_start + INSERT_CHUNK],
            )
    return [pk_of[i] for i in range(messages)]


def backlog_reset() -> None:
    """Mark the backlog not evaluated again and forget the engine's state: the next worker
    configuration evaluates exactly what the previous one did."""
    from bench.hospital import bench_alert_state_clear
    from monitoring.models import IngestMessage

    IngestMessage.objects.update(evaluated_at=None)
    bench_alert_state_clear()


def _pending(pks: list[int] | None = None) -> int:
    from monitoring.models import IngestMessage

    pending = IngestMessage.objects.filter(evaluated_at__isnull=True)
    if pks is not None:
        pending = pending.filter(pk__in=pks)
    return pending.count()


def _send_tasks(pks: list[int], batch: int) -> None:
    from alerts.tasks import evaluate_messages

    # As the dispatcher does (alerts/dispatch.py), but on one connection for the whole backlog.
    with evaluate_messages.app.connection_for_write() as connection:
        for start in range(0, len(pks), batch):
            evaluate_messages.apply_async(
                args=[pks[start : start + batch]], retry=False, connection=connection
            )


def _wait_evaluated(pks: list[int] | None, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while _pending(pks):
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: messages still not evaluated after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def throughput_run(
    harness: Harness,
    args: argparse.Namespace,
    *,
    pks: list[int],
    fresh: bool,
    concurrency: int,
    repeat: int,
) -> dict[str, Any]:
    """Evaluate the stored backlog ``pks`` with one worker of ``concurrency`` processes
    (``fresh``: nothing evaluated it yet; otherwise it is reset first)."""
    from alerts.models import Alert

    if not fresh:
        backlog_reset()
    log = harness.log(f"celery-c{concurrency}-{repeat + 1}")
    worker = celery_start(env=harness.env, log_path=log, concurrency=concurrency)
    try:
        warm, rest = pks[: args.task_batch], pks[args.task_batch :]
        _send_tasks(warm, args.task_batch)
        _wait_evaluated(warm, timeout=120, what="warm-up task")
        offset = log.stat().st_size if log.exists() else 0
        meters = [
            CpuMeter("celery", psutil.Process(worker.pid)),
            CpuMeter("mariadbd", listening_process(harness.database_port)),
            CpuMeter("redis-server", listening_process(harness.redis_port)),
        ]
        for meter in meters:
            meter.start()
        busy_start, started = machine_busy_seconds(), time.monotonic()
        _send_tasks(rest, args.task_batch)
        enqueued = time.monotonic() - started
        _wait_evaluated(None, timeout=max(300.0, len(rest) / 20), what="the backlog")
        seconds = time.monotonic() - started
        cpu = {meter.label: meter.stop() for meter in meters}
        busy = machine_busy_seconds() - busy_start
    finally:
        worker.stop()
    cpu_percent = {k: (100 * v / seconds if v is not None else None) for k, v in cpu.items()}
    machine = 100 * busy / seconds
    failures = _task_failures(log, offset)
    return {
        "concurrency": concurrency,
        "messages": len(rest),
        "readings": 6 * len(rest),
        "tasks": -(-len(rest) // args.task_batch),
        "seconds": seconds,
        "enqueue_seconds": enqueued,
        "messages_per_second": len(rest) / seconds,
        "readings_per_second": 6 * len(rest) / seconds,
        "cpu_percent": cpu_percent,
        "machine_busy_percent": machine,
        "others_percent": max(0.0, machine - sum(v or 0 for v in cpu_percent.values())),
        "alerts_fired": Alert.objects.filter(patient__mrn__startswith="BENCH").count(),
        "task_failures": failures,
        "task_failures_total": sum(failures.values()),
    }


# --- (b) latency under load -----------------------------------------------------------------


def desaturation_plan(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[int]]:
    """Cohorts of devices spread over the wards, each starting to send low SpO2 at its own
    time in the measured window; returns the overrides and the devices to trace."""
    from monitoring.vitals import SPO2

    total = args.cohorts * args.cohort_size
    chosen = [round(i * args.devices / total) for i in range(total)]
    room = args.duration - FIRST_COHORT_AT - LOW_SECONDS - 2.0
    spacing = room / args.cohorts if args.cohorts > 1 else 0.0
    if spacing < 0:
        raise BenchError(f"--duration {args.duration:g} leaves no room for the desaturations")
    overrides = []
    for cohort in range(args.cohorts):
        start = args.warmup + FIRST_COHORT_AT + cohort * spacing
        for device in chosen[cohort :: args.cohorts]:
            overrides.append(
                {
                    "device": device,
                    "code": SPO2.code,
                    "value": float(args.spo2),
                    "from": round(start, 3),
                    "to": round(start + LOW_SECONDS, 3),
                    "cohort": cohort,
                }
            )
    return overrides, chosen


def _fired_events(
    events: list[tuple[float, dict[str, Any]]], spo2_code: str
) -> dict[str, tuple[float, dict[str, Any]]]:
    """Bed public id → (received, event) of the first SpO2 threshold 'fired' event."""
    fired: dict[str, tuple[float, dict[str, Any]]] = {}
    for received, event in events:
        if (
            event.get("type") == "alert"
            and event.get("event") == "fired"
            and event.get("rule_kind") == "threshold"
            and event.get("code") == spo2_code
            and event.get("bed") not in fired
        ):
            fired[event["bed"]] = (received, event)
    return fired


def latency_run(harness: Harness, args: argparse.Namespace, *, repeat: int) -> dict[str, Any]:
    from bench.hospital import bench_alert_state_clear, bench_beds_by_device, bench_readings_clear
    from monitoring.events import ward_group_name
    from monitoring.models import IngestMessage
    from monitoring.vitals import SPO2

    bench_readings_clear()
    bench_alert_state_clear()
    devices, tokens_file = device_tokens_file(harness, count=args.devices)
    device_of_bed = bench_beds_by_device(devices=devices)
    overrides, desaturating = desaturation_plan(args)
    wards = sorted(
        {d["bed__ward__code"] for d in _device_wards([devices[i].pk for i in desaturating])}
    )
    run_id = f"{harness.stamp}-alerts-{repeat + 1}"
    celery: Service | None = None
    daphne: Service | None = None
    listener: GroupListener | None = None
    load = None
    try:
        celery = celery_start(env=harness.env, log_path=harness.log(f"celery-latency-{repeat + 1}"))
        port = free_port()
        daphne = daphne_start(
            env=harness.env,
            port=port,
            log_path=harness.log(f"daphne-latency-{repeat + 1}"),
            probe_path=INGEST_PATH,
            probe_status=405,
        )
        listener = GroupListener([ward_group_name(code) for code in wards], keep_vitals=False)
        listener.start()
        load = paced_load_start(
            harness,
            tokens_file=tokens_file,
            port=port,
            devices=args.devices,
            duration=args.duration,
            warmup=args.warmup,
            run_id=run_id,
            celery=celery,
            daphne=daphne,
            overrides=overrides,
            trace_devices=range(args.devices),  # every device: the lag is split at the 201
            loadgen_procs=args.loadgen_procs,
        )
        paced_load_measure(load)
        outputs, measured = paced_load_finish(load)
        time.sleep(1.0)  # the last dispatcher tick
        drained = celery_wait_drained(harness, timeout=120.0)
        bed_of_device = {index: bed for bed, index in device_of_bed.items()}
        expected = {bed_of_device[i] for i in desaturating}
        deadline = time.monotonic() + FIRED_WAIT_SECONDS
        while time.monotonic() < deadline:
            if expected <= _fired_events(listener.events, SPO2.code).keys():
                break
            time.sleep(0.2)
        events = listener.stop()
        listener_dropped = listener.dropped
        listener = None
    finally:
        if listener is not None:
            listener.stop()
        if load is not None:
            paced_load_stop(load)
        if daphne is not None:
            daphne.stop()
        if celery is not None:
            celery.stop()
    ingestion = paced_load_summary(load, outputs, measured)
    traced = traced_responses(outputs)
    fired = _fired_events(events, SPO2.code)
    samples, queue_wait, evaluate_to_event, unmatched = [], [], [], []
    from_reading: list[float] = []
    firing_messages: dict[str, tuple[int, float, float]] = {}
    for bed, (received, event) in fired.items():
        device = device_of_bed.get(bed)
        match = traced.get((device, epoch_ms(event["fired_at"]))) if device is not None else None
        if match is None:
            unmatched.append(bed)
            continue
        number, answered_at = match
        samples.append(1000 * (received - answered_at))
        # From the device's own clock (observed_at = when it sent): includes ingestion.
        from_reading.append(received * 1000 - epoch_ms(event["fired_at"]))
        firing_messages[f"{run_id}-d{device}-{number}"] = (device, answered_at, received)
    evaluated = dict(
        IngestMessage.objects.filter(message_id__in=list(firing_messages)).values_list(
            "message_id", "evaluated_at"
        )
    )
    for message_id, (_, answered_at, received) in firing_messages.items():
        at = evaluated.get(message_id)
        if at is not None:
            queue_wait.append(1000 * (at.timestamp() - answered_at))
            evaluate_to_event.append(1000 * (received - at.timestamp()))
    # The evaluation lag of every message of the measured window, split at its 201: before
    # it, the server's own queue and commit; after it, dispatch tick, broker and worker.
    answered = {
        f"{run_id}-d{device}-{number}": answered_at
        for output in outputs
        for device, entries in output.get("trace", {}).items()
        for number, _, answered_at, status in entries
        if status == 201
    }
    lag, before_201, after_201 = [], [], []
    for message_id, received_at, evaluated_at in IngestMessage.objects.filter(
        evaluated_at__isnull=False,
        received_at__gte=dt.datetime.fromtimestamp(load.measure_at, tz=dt.UTC),
    ).values_list("message_id", "received_at", "evaluated_at"):
        lag.append(1000 * (evaluated_at - received_at).total_seconds())
        at = answered.get(message_id)
        if at is not None:
            before_201.append(1000 * (at - received_at.timestamp()))
            after_201.append(1000 * (evaluated_at.timestamp() - at))
    not_evaluated = IngestMessage.objects.filter(evaluated_at__isnull=True).count()
    desaturated = expected
    return {
        "fired_latency_ms": latency(samples),
        "reading_to_fired_ms": latency(from_reading),
        "queue_wait_ms": latency(queue_wait),
        "evaluate_to_event_ms": latency(evaluate_to_event),
        "evaluation_lag_ms": latency(lag),
        "evaluation_lag_received_to_201_ms": latency(before_201),
        "evaluation_lag_201_to_evaluated_ms": latency(after_201),
        "not_evaluated_after_drain": not_evaluated,
        "celery_drain_seconds": drained,
        "desaturations": len(desaturating),
        "fired": len(fired.keys() & desaturated),
        "missing_firings": len(desaturated - fired.keys()),
        "unexpected_firings": len(fired.keys() - desaturated),
        "unmatched_firings": len(unmatched),
        "alert_events_received": sum(1 for _, e in events if e.get("type") == "alert"),
        "listener_dropped": listener_dropped,
        "wards": wards,
        "overrides": overrides,
        "samples_ms": sorted(round(s, 1) for s in samples),
        "ingestion": ingestion,
        "ingestion_line": ingestion_line(ingestion),
    }


def _device_wards(pks: list[int]) -> list[dict[str, Any]]:
    from monitoring.models import Device

    return list(Device.objects.filter(pk__in=pks).values("pk", "bed__ward__code"))
