"""Changes to devices and their readings."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from config.dbthreads import reconnecting
from config.rawsql import (
    column_sql,
    concrete_field,
    datetime_from_db,
    placeholders,
    row_insert,
    rows_insert_returning,
    rows_update,
    table_sql,
    uuid_from_db,
    values_adapted,
)
from monitoring.ingestion import MAX_FUTURE_SKEW, DeviceMessage, Reading
from monitoring.metrics import INGEST_GROUPS_SPLIT
from monitoring.models import Device, IngestMessage, Observation, token_digest
from monitoring.vitals import VITALS
from patients.models import Admission, Bed, Patient, Ward

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "dev_"  # noqa: S105 - a recognisable prefix, not a secret


@transaction.atomic
def device_token_issue(*, device: Device) -> str:
    """Issue (or rotate) the device's API token and return it; only its digest is stored.

    Rotation replaces the digest in one UPDATE, so the old token stops working at once.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    device_token_store(device=device, token=token)
    return token


def device_token_store(*, device: Device, token: str) -> bool:
    """Make ``token`` the device's credential; return False if it already was (no write)."""
    digest = token_digest(token)
    if device.token_digest == digest:
        return False
    device.token_digest = digest
    device.token_hint = token[: len(TOKEN_PREFIX) + 4]
    device.token_issued_at = timezone.now()
    device.save(update_fields=["token_digest", "token_hint", "token_issued_at"])
    return True


@transaction.atomic
def device_token_revoke(*, device: Device) -> None:
    device.token_digest = None
    device.token_hint = ""
    device.token_issued_at = None
    device.save(update_fields=["token_digest", "token_hint", "token_issued_at"])


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """What a committed message changed, for the after-commit hooks (push, evaluation)."""

    message_pk: int
    device_pk: int
    ward_code: str | None
    bed_public_id: str | None
    # The newest reading of each code, per patient public id (None: no patient).
    latest: dict[str | None, dict[str, Reading]]
    readings: int = 0  # how many the message stored


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    status: int
    body: dict[str, Any]
    recorded: RecordedMessage | None = None  # None when nothing new was stored


def message_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# last_seen_at moves at most this often per device, so a device posting at 1 Hz costs no extra
# UPDATE per message; the offline alarm's timeout is far longer.
LAST_SEEN_RESOLUTION = dt.timedelta(seconds=5)
_DEADLOCK = 1213  # ER_LOCK_DEADLOCK


def device_for_token(*, digest: str) -> dict[str, Any] | None:
    """The device holding the token of this digest: pk, active, bed_id, bed__public_id,
    bed__ward__code, last_seen_at (None: no such device)."""
    device, _ = _device_and_stays(digest=digest, during=None)
    return device


@functools.cache
def _device_and_stays_sql(vendor: str, *, with_stays: bool, digests: int = 1) -> str:
    """The lookup's statement, built once per database vendor (its quoting) and shape: the
    device columns, ``token_digest``, then (``with_stays``) the admissions' columns."""
    columns = [
        column_sql(Device, "d", "id"),
        column_sql(Device, "d", "active"),
        column_sql(Device, "d", "bed"),
        column_sql(Bed, "b", "public_id"),
        column_sql(Ward, "w", "code"),
        column_sql(Device, "d", "last_seen_at"),
        column_sql(Device, "d", "token_digest"),
    ]
    joins = [
        f"LEFT JOIN {table_sql(Bed, 'b')} ON {column_sql(Bed, 'b', 'id')} = "
        f"{column_sql(Device, 'd', 'bed')}",
        f"LEFT JOIN {table_sql(Ward, 'w')} ON {column_sql(Ward, 'w', 'id')} = "
        f"{column_sql(Bed, 'b', 'ward')}",
    ]
    if with_stays:
        columns += [
            column_sql(Admission, "a", "admitted_at"),
            column_sql(Admission, "a", "discharged_at"),
            column_sql(Admission, "a", "patient"),
            column_sql(Patient, "p", "public_id"),
        ]
        # The admissions that occupied the bed at some moment of [start, end] (%s: end, start).
        joins += [
            f"LEFT JOIN {table_sql(Admission, 'a')} ON {column_sql(Admission, 'a', 'bed')} = "
            f"{column_sql(Device, 'd', 'bed')} AND "
            f"{column_sql(Admission, 'a', 'admitted_at')} <= %s AND "
            f"({column_sql(Admission, 'a', 'discharged_at')} IS NULL OR "
            f"{column_sql(Admission, 'a', 'discharged_at')} > %s)",
            f"LEFT JOIN {table_sql(Patient, 'p')} ON {column_sql(Patient, 'p', 'id')} = "
            f"{column_sql(Admission, 'a', 'patient')}",
        ]
    where = "= %s" if digests == 1 else f"IN ({placeholders(digests)})"
    # Admissions of a bed do not overlap; were two to (a correction by hand), a reading would
    # go to the later one, however many devices the statement looks up.
    order = f" ORDER BY {column_sql(Admission, 'a', 'admitted_at')} DESC" if with_stays else ""
    return (
        f"SELECT {', '.join(columns)} FROM {table_sql(Device, 'd')} {' '.join(joins)}"  # noqa: S608 - names from model metadata
        f" WHERE {column_sql(Device, 'd', 'token_digest')} {where}{order}"
    )


Stay = tuple[dt.datetime, dt.datetime | None, int, uuid.UUID]


def _device_and_stays(
    *, digest: str, during: tuple[dt.datetime, dt.datetime] | None
) -> tuple[dict[str, Any] | None, list[Stay]]:
    """The device of ``digest`` and, when ``during`` is given, the admissions that occupied
    its bed at some moment of that span: one round trip on the hot path of every message.

    Raw SQL: the two ORM queries it replaces (their building and compiling) were over a fifth
    of the ingestion server's CPU at 300 devices (py-spy during ``bin/bench ingest``).
    """
    return _devices_and_stays(digests=[digest], during=during).get(digest, (None, []))


def _devices_and_stays(
    *, digests: Sequence[str], during: tuple[dt.datetime, dt.datetime] | None
) -> dict[str, tuple[dict[str, Any], list[Stay]]]:
    """``_device_and_stays`` for several digests in one statement: by digest, the devices that
    exist (a digest without a device is left out)."""
    params: list[Any] = list(digests)
    if during is not None:
        start, end = (connection.ops.adapt_datetimefield_value(moment) for moment in during)
        params = [end, start, *digests]
    sql = _device_and_stays_sql(
        connection.vendor, with_stays=during is not None, digests=len(digests)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found: dict[str, tuple[dict[str, Any], list[Stay]]] = {}
    for row in rows:
        digest = row[6]
        if digest not in found:
            pk, active, bed_id, bed_public_id, ward_code, last_seen_at = row[:6]
            device = {
                "pk": pk,
                "active": bool(active),
                "bed_id": bed_id,
                "bed__public_id": uuid_from_db(bed_public_id),
                "bed__ward__code": ward_code,
                "last_seen_at": datetime_from_db(last_seen_at),
            }
            found[digest] = (device, [])
        if during is not None and row[9] is not None:
            admitted_at, discharged_at, patient_pk, public_id = row[7:11]
            stay: Stay = (  # type: ignore[assignment]
                datetime_from_db(admitted_at),
                datetime_from_db(discharged_at),
                patient_pk,
                uuid_from_db(public_id),
            )
            found[digest][1].append(stay)
    return found


def observations_record(
    *, token_digest: str, message: DeviceMessage, body_digest: str, now: dt.datetime
) -> RecordOutcome:
    """Store one device message: idempotency record and readings, in one transaction.

    Invariants: a reading is stored only with its message's idempotency row, in the same
    commit; ``(device, message_id)`` is unique, so a retry (even a simultaneous one) stores
    nothing and gets the original response; a different body under a used id is refused.
    Readings whose bed has no admitted patient at ``observed_at`` are stored without patient.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                return _record(
                    token_digest=token_digest, message=message, body_digest=body_digest, now=now
                )
        except IntegrityError as error:
            # The message was stored before (a retry) or by a simultaneous identical request
            # that committed first: answer as the stored message was answered. Checking after
            # the insert rather than before keeps the usual path one query shorter.
            if "ingest_message_unique_per_device" not in str(error):
                raise
            replay = _replay(token_digest=token_digest, message=message, body_digest=body_digest)
            if replay is not None:
                return replay
            if attempt == attempts:
                raise
        except OperationalError as error:
            # InnoDB rolled a deadlock victim back whole, so trying again is safe.
            if not error.args or error.args[0] != _DEADLOCK or attempt == attempts:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class MessageToRecord:
    """A parsed device message with what its request knew, for ``observations_record_group``."""

    token_digest: str
    message: DeviceMessage
    body_digest: str
    now: dt.datetime


def observations_record_group(
    items: Sequence[MessageToRecord],
) -> list[RecordOutcome | Exception]:
    """Store several device messages in one transaction; each item's outcome, in order.

    Each message is answered as ``observations_record`` would have answered it alone: the group
    commits whole or not at all. A message sent twice within the group (a device's retry) is
    left out of it and stored after it, alone, so it is answered from the first one's
    idempotency row. When the group cannot commit because some of its messages were stored
    before (retries), those are answered alone the same way and the others are tried together
    once more; on any other failure (a deadlock, a lost connection, anything else) every
    message is stored in a transaction of its own, its failure (the exception) its own.
    What a group saves is the per-transaction work, once for all its messages instead of once
    each: the device lookup, the commit and the round trips around it.
    """
    outcomes: dict[int, RecordOutcome | Exception] = {}
    together, alone = _repeats_apart(items)
    if len(together) > 1 and connection.features.can_return_rows_from_bulk_insert:
        grouped, left = _record_together(items, together)
        outcomes.update(grouped)
        alone += left
    else:
        alone += together
    record = reconnecting(observations_record, name="ingest-writer")
    for index in sorted(alone):
        item = items[index]
        try:
            outcomes[index] = record(
                token_digest=item.token_digest,
                message=item.message,
                body_digest=item.body_digest,
                now=item.now,
            )
        except Exception as error:
            outcomes[index] = error
    # Every item has its outcome (a KeyError here would fail them all, never shift them).
    return [outcomes[index] for index in range(len(items))]


def _record_together(
    items: Sequence[MessageToRecord], together: list[int]
) -> tuple[dict[int, RecordOutcome], list[int]]:
    """Store the items ``together`` in one transaction: (their outcomes by index, the indexes
    left to store alone). A group that failed because some of its messages were stored before
    (retries) is tried once more without them; on any other failure nothing is stored."""
    alone: list[int] = []
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                grouped = _record_group([items[i] for i in together])
        except Exception as error:
            if isinstance(error, OperationalError):
                connection.close()  # the next statement starts on a sound connection
            INGEST_GROUPS_SPLIT.labels(reason=type(error).__name__).inc()
            stored: set[int] = set()
            if attempt == 1 and _is_repeat(error):
                stored = _stored_before(items, together)
            if not stored or len(together) - len(stored) < 2:
                return {}, alone + together
            alone += sorted(stored)
            together = [i for i in together if i not in stored]
            continue
        return dict(zip(together, grouped, strict=True)), alone
    raise AssertionError("unreachable: the second attempt returns")


def _repeats_apart(items: Sequence[MessageToRecord]) -> tuple[list[int], list[int]]:
    """(the first item of each device and message_id, the items repeating one of them)."""
    first: list[int] = []
    repeats: list[int] = []
    keys: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        key = (item.token_digest, item.message.message_id)
        (repeats if key in keys else first).append(index)
        keys.add(key)
    return first, repeats


def _is_repeat(error: Exception) -> bool:
    return isinstance(error, IntegrityError) and "ingest_message_unique_per_device" in str(error)


def _stored_before(items: Sequence[MessageToRecord], indexes: list[int]) -> set[int]:
    """The ``indexes`` of the items whose device and message_id are already stored (as the
    database compares message ids; an id it takes for a stored one but Python does not is
    not found here, and its group is then stored message by message)."""
    try:
        stored = set(
            IngestMessage.objects.filter(
                device__token_digest__in={items[i].token_digest for i in indexes},
                message_id__in={items[i].message.message_id for i in indexes},
            ).values_list("device__token_digest", "message_id")
        )
    except Exception:
        logger.warning("looking up a group's stored messages failed", exc_info=True)
        return set()
    return {i for i in indexes if (items[i].token_digest, items[i].message.message_id) in stored}


def _replay(*, token_digest: str, message: DeviceMessage, body_digest: str) -> RecordOutcome | None:
    device = device_for_token(digest=token_digest)
    if device is None:
        return None
    previous = (
        IngestMessage.objects.filter(device_id=device["pk"], message_id=message.message_id)
        .values("body_digest", "response")
        .first()
    )
    if previous is None:
        return None
    if previous["body_digest"] == body_digest:
        return RecordOutcome(201, previous["response"])
    return RecordOutcome(
        422,
        {
            "code": "message_id_conflict",
            "detail": "This message_id was already used for a different message; a retry "
            "must resend the same body, a new message needs a new message_id.",
            "field": "message_id",
        },
    )


def _last_seen_moves(device: dict[str, Any], now: dt.datetime) -> bool:
    last_seen = device["last_seen_at"]
    return last_seen is None or now - last_seen >= LAST_SEEN_RESOLUTION


def _record(
    *, token_digest: str, message: DeviceMessage, body_digest: str, now: dt.datetime
) -> RecordOutcome:
    readings = message.readings
    during = (min(r.observed_at for r in readings), max(r.observed_at for r in readings))
    device, stays = _device_and_stays(digest=token_digest, during=during)
    if device is None or not device["active"]:
        return RecordOutcome(401, device_refusal_body(device))
    if _last_seen_moves(device, now):
        # Before the inserts: the message row's foreign key takes a shared lock on the device
        # row, so updating the device after it deadlocks against a simultaneous retry.
        rows_update(Device, ["last_seen_at"], [(device["pk"], [now])])
    accepted = _Accepted.of(device=device, stays=stays, message=message)
    # Raw (config.rawsql): objects.create was a tenth of the ingestion server's CPU.
    row = accepted.message_row(body_digest, now)
    message_pk = row_insert(IngestMessage, **dict(zip(_MESSAGE_FIELDS, row, strict=True)))
    _readings_insert(accepted.reading_rows(message_pk, now))
    return accepted.outcome(message_pk)


def _record_group(items: Sequence[MessageToRecord]) -> list[RecordOutcome]:
    """``_record`` for several messages: one device lookup, one UPDATE of the devices' last
    contact, one INSERT of the messages, one of their readings."""
    moments = [reading.observed_at for item in items for reading in item.message.readings]
    found = _devices_and_stays(
        digests=sorted({item.token_digest for item in items}),
        during=(min(moments), max(moments)),
    )
    outcomes: list[RecordOutcome | None] = [None] * len(items)
    accepted: list[tuple[int, _Accepted]] = []
    seen: dict[int, dt.datetime] = {}  # device pk → the contact its last_seen_at moves to
    for index, item in enumerate(items):
        device, stays = found.get(item.token_digest, (None, []))
        if device is None or not device["active"]:
            outcomes[index] = RecordOutcome(401, device_refusal_body(device))
            continue
        if _last_seen_moves(device, item.now):
            seen[device["pk"]] = max(item.now, seen.get(device["pk"], item.now))
        accepted.append((index, _Accepted.of(device=device, stays=stays, message=item.message)))
    if accepted:
        _devices_touch(sorted({entry.device["pk"] for _, entry in accepted}), seen)
    if accepted:
        inserted = rows_insert_returning(
            IngestMessage,
            _MESSAGE_FIELDS,
            [entry.message_row(items[i].body_digest, items[i].now) for i, entry in accepted],
            returning=("id", "device_id", "message_id"),
        )
        pks = {(device_pk, message_id): pk for pk, device_pk, message_id in inserted}
        rows: list[tuple[Any, ...]] = []
        for index, entry in accepted:
            # A KeyError (a row not returned as sent) rolls the group back: stored one by one.
            message_pk = int(pks[(entry.device["pk"], items[index].message.message_id)])
            rows += entry.reading_rows(message_pk, items[index].now)
            outcomes[index] = entry.outcome(message_pk)
        _readings_insert(rows)
    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) != len(items):  # cannot happen; if it did, the group is stored one by one
        raise AssertionError("a message of the group has no outcome")
    return done


def _devices_touch(pks: list[int], seen: dict[int, dt.datetime]) -> None:
    """One UPDATE of the group's devices, in key order: it moves the last contact of those in
    ``seen`` and locks every one of them for the rest of the transaction. Taken before the
    inserts, whose foreign keys would otherwise lock the devices one by one in the messages'
    order (shared locks beside this update's exclusive ones): that way two groups with devices
    in common could each wait for the other (a deadlock, and a group stored message by
    message); in one order they cannot."""
    database = connection
    quote = database.ops.quote_name
    table = quote(Device._meta.db_table)
    key = quote(Device._meta.pk.column)
    column = quote(concrete_field(Device, "last_seen_at").column)
    value = column
    params: list[Any] = []
    if seen:
        value = f"CASE {key} {' '.join(['WHEN %s THEN %s'] * len(seen))} ELSE {column} END"
        for pk in sorted(seen):
            params += [pk, *values_adapted(Device, ["last_seen_at"], [seen[pk]])]
    with database.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = {value} WHERE {key} IN ({placeholders(len(pks))})",  # noqa: S608 - names from model metadata
            [*params, *pks],
        )


# The IngestMessage fields a message's row is inserted with, in ``_Accepted.message_row``'s order.
_MESSAGE_FIELDS = (
    "device_id",
    "message_id",
    "body_digest",
    "response",
    "observation_count",
    "received_at",
)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A message its device may post, with each reading's patient and the 201's body."""

    device: dict[str, Any]
    message: DeviceMessage
    patients: list[tuple[int, uuid.UUID] | None]
    response: dict[str, Any]

    @classmethod
    def of(cls, *, device: dict[str, Any], stays: list[Stay], message: DeviceMessage) -> _Accepted:
        patients = _patients_by_reading(stays=stays, readings=message.readings)
        newest = max(range(len(message.readings)), key=lambda i: message.readings[i].observed_at)
        unassigned = sum(1 for p in patients if p is None)
        newest_patient = patients[newest]
        response: dict[str, Any] = {
            "message_id": message.message_id,
            "accepted": len(message.readings),
            "patient": str(newest_patient[1]) if newest_patient else None,
        }
        if unassigned:
            response["unassigned"] = unassigned
            response["warning"] = (
                f"{unassigned} reading(s) stored without a patient: the device has no bed or "
                "no patient was admitted to its bed at observed_at. Administrators can see them."
            )
        return cls(device=device, message=message, patients=patients, response=response)

    def message_row(self, body_digest: str, now: dt.datetime) -> tuple[Any, ...]:
        return (
            self.device["pk"],
            self.message.message_id,
            body_digest,
            self.response,
            len(self.message.readings),
            now,
        )

    def reading_rows(self, message_pk: int, received_at: dt.datetime) -> list[tuple[Any, ...]]:
        """The rows of ``_readings_insert``, in its column order."""
        adapt: Callable[[dt.datetime], Any] = connection.ops.adapt_datetimefield_value
        if connection.vendor == "mysql":
            # Readings are already UTC; MySQLdb takes naive datetimes as they are, which skips
            # Django's per-value adaptation (measured at ~8 % of a batched run's CPU).
            adapt = _naive
        received = adapt(received_at)
        return [
            (
                self.device["pk"],
                patient[0] if patient else None,
                message_pk,
                reading.code,
                reading.value,
                reading.unit,
                adapt(reading.observed_at),
                received,
                reading.artifact,
            )
            for reading, patient in zip(self.message.readings, self.patients, strict=True)
        ]

    def outcome(self, message_pk: int) -> RecordOutcome:
        latest: dict[str | None, dict[str, Reading]] = {}
        for reading, patient in zip(self.message.readings, self.patients, strict=True):
            by_code = latest.setdefault(str(patient[1]) if patient else None, {})
            current = by_code.get(reading.code)
            if current is None or reading.observed_at >= current.observed_at:
                by_code[reading.code] = reading
        bed_public_id = self.device["bed__public_id"]
        recorded = RecordedMessage(
            message_pk=message_pk,
            device_pk=self.device["pk"],
            ward_code=self.device["bed__ward__code"],
            bed_public_id=str(bed_public_id) if bed_public_id else None,
            latest=latest,
            readings=len(self.message.readings),
        )
        return RecordOutcome(201, self.response, recorded)


def device_refusal_body(device: dict[str, Any] | None) -> dict[str, Any]:
    if device is None:
        return {"code": "invalid_credentials", "detail": "Unknown or revoked device token."}
    return {"code": "device_inactive", "detail": "This device is deactivated."}


def _patients_by_reading(
    *, stays: list[Stay], readings: tuple[Reading, ...]
) -> list[tuple[int, uuid.UUID] | None]:
    """For each reading, (patient pk, public id) of the bed's admission at observed_at."""
    result: list[tuple[int, uuid.UUID] | None] = []
    for reading in readings:
        match = None
        for admitted_at, discharged_at, patient_pk, public_id in stays:
            if admitted_at <= reading.observed_at and (
                discharged_at is None or reading.observed_at < discharged_at
            ):
                match = (patient_pk, public_id)
                break
        result.append(match)
    return result


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=None)


def _readings_insert(rows: list[tuple[Any, ...]]) -> None:
    # One multi-row INSERT (mysqlclient batches executemany) rather than the ORM's
    # bulk_create, which builds the SQL in Python at about a third of the speed (perf-facts).
    table = connection.ops.quote_name(Observation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (device_id, patient_id, message_id, code, value, unit,"  # noqa: S608 - table name from model metadata
            " observed_at, received_at, artifact) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


class ObservationRefused(Exception):
    """A staff-entered reading that cannot be recorded. ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@transaction.atomic
def observation_enter(
    *,
    patient: Any,
    code: str,
    value: float,
    user: Any,
    observed_at: dt.datetime | None = None,
) -> Observation:
    """Record a reading entered by staff (air or oxygen, ACVPU consciousness) for NEWS2.

    Only the catalogue's staff-entered codes are accepted, inside their bands. The next
    evaluation of the patient's device readings scores it (within seconds on a monitored
    patient).
    """
    vital = VITALS.get(code)
    if vital is None or vital.posted_by_devices:
        raise ObservationRefused("unknown_code", f"{code!r} is not a staff-entered observation.")
    if not vital.plausible_min <= value <= vital.plausible_max or value != int(value):
        raise ObservationRefused(
            "implausible_value",
            f"{vital.name} takes a whole number from {vital.plausible_min:g} to "
            f"{vital.plausible_max:g}.",
        )
    now = timezone.now()
    observed_at = observed_at or now
    if observed_at > now + MAX_FUTURE_SKEW:
        raise ObservationRefused("observed_at_in_future", "The observation time is in the future.")
    return Observation.objects.create(
        patient=patient,
        entered_by=user,
        code=vital.code,
        value=float(value),
        unit=vital.unit,
        observed_at=observed_at,
        received_at=now,
    )
