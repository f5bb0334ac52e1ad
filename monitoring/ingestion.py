"""Parsing and validating a device message: pure Python, no database.

A message with any bad observation is rejected whole, so a device fixes and resends rather
than the portal storing half of what it was sent. Every refusal carries a stable ``code``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from monitoring.vitals import DEVICE_VITALS, VITALS

MAX_BODY_BYTES = 1024 * 1024
MAX_OBSERVATIONS = 1000
MAX_MESSAGE_ID_LENGTH = 255
MAX_FUTURE_SKEW = dt.timedelta(minutes=2)
# A device whose clock was reset reports 1970 or 2000; such a time would attach the reading to
# whoever was in the bed then (nobody), so it is refused as a clock error.
EARLIEST_OBSERVED_AT = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
OBSERVATION_FIELDS = frozenset({"code", "value", "unit", "observed_at", "artifact"})


@dataclass(frozen=True, slots=True)
class IngestError(Exception):
    """A request the portal answers with a 4xx and this JSON body."""

    status: int
    code: str
    detail: str
    index: int | None = None
    field: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.index is not None:
            body["index"] = self.index
        if self.field is not None:
            body["field"] = self.field
        return body


@dataclass(frozen=True, slots=True)
class Reading:
    code: str
    value: float  # in the catalogue's canonical unit
    unit: str  # the canonical unit
    observed_at: dt.datetime  # aware, UTC
    artifact: bool


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    message_id: str
    readings: tuple[Reading, ...]


def _bad(code: str, detail: str, index: int | None = None, field: str | None = None) -> IngestError:
    path = None
    if field is not None:
        path = f"observations[{index}].{field}" if index is not None else field
    return IngestError(400, code, detail, index, path)


def _reject_constant(name: str) -> float:
    # json accepts NaN and Infinity by default; a device sending them is broken.
    raise ValueError(f"{name} is not valid JSON")


def message_parse(*, body: bytes, now: dt.datetime) -> DeviceMessage:
    """Decode and validate a device message; raise IngestError naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad("invalid_encoding", f"The body is not UTF-8 ({error.reason}).") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise _bad("malformed_json", f"The body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _bad("invalid_body", "The body must be a JSON object.")

    message_id = document.get("message_id")
    if message_id is None:
        raise _bad("missing_message_id", "message_id is required.", field="message_id")
    if not isinstance(message_id, str) or not message_id.strip():
        raise _bad(
            "invalid_message_id", "message_id must be a non-empty string.", field="message_id"
        )
    try:
        # JSON escapes can smuggle in lone surrogates, which no UTF-8 column can store: the
        # insert would fail on every retry, so refuse them here with a reason.
        message_id.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(
            "invalid_message_id", "message_id is not valid Unicode text.", field="message_id"
        ) from None
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise _bad(
            "invalid_message_id",
            f"message_id is longer than {MAX_MESSAGE_ID_LENGTH} characters.",
            field="message_id",
        )
    unknown = set(document) - {"message_id", "observations"}
    if unknown:
        raise _bad(
            "unknown_field",
            f"Unknown field(s): {', '.join(sorted(unknown))}.",
            field=sorted(unknown)[0],
        )

    observations = document.get("observations")
    if observations is None:
        raise _bad("missing_observations", "observations is required.", field="observations")
    if not isinstance(observations, list) or not observations:
        raise _bad(
            "invalid_observations",
            "observations must be a non-empty list.",
            field="observations",
        )
    if len(observations) > MAX_OBSERVATIONS:
        raise _bad(
            "too_many_observations",
            f"A message holds at most {MAX_OBSERVATIONS} observations, not {len(observations)}.",
            field="observations",
        )
    readings = tuple(
        _reading_parse(item, index=index, now=now) for index, item in enumerate(observations)
    )
    return DeviceMessage(message_id=message_id, readings=readings)


def _reading_parse(item: object, *, index: int, now: dt.datetime) -> Reading:
    if not isinstance(item, dict):
        raise _bad("invalid_observation", "Each observation must be a JSON object.", index)
    unknown = set(item) - OBSERVATION_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise _bad("unknown_field", f"Unknown field {name!r} in an observation.", index, name)
    for name in ("code", "value", "unit", "observed_at"):
        if name not in item:
            raise _bad("missing_field", f"{name} is required.", index, name)

    code = item["code"]
    vital = DEVICE_VITALS.get(code) if isinstance(code, str) else None
    if vital is None:
        if isinstance(code, str) and code in VITALS:
            detail = f"{code} is entered by staff, not posted by devices."
        else:
            detail = f"Unknown vital-sign code {code!r}; see the catalogue of accepted LOINC codes."
        raise _bad("unknown_code", detail, index, "code")

    unit = item["unit"]
    if not isinstance(unit, str) or unit not in vital.accepted_units:
        raise _bad(
            "invalid_unit",
            f"{vital.name} ({vital.code}) takes the UCUM unit(s) "
            f"{', '.join(repr(u) for u in vital.accepted_units)}, not {unit!r}.",
            index,
            "unit",
        )

    value = item["value"]
    # bool is an int subclass in Python; true/false are not readings.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad("invalid_value", "value must be a number.", index, "value")
    value = float(value)
    if not math.isfinite(value):
        raise _bad("invalid_value", "value must be a finite number.", index, "value")
    canonical = vital.to_canonical(value, unit)
    if not vital.plausible_min <= canonical <= vital.plausible_max:
        raise _bad(
            "implausible_value",
            f"{vital.name} {canonical:g} {vital.unit} is outside the plausible range "
            f"{vital.plausible_min:g}–{vital.plausible_max:g} {vital.unit}: a device or input "
            "error.",
            index,
            "value",
        )

    observed_at = _observed_at_parse(item["observed_at"], index=index, now=now)
    artifact = item.get("artifact", False)
    if not isinstance(artifact, bool):
        raise _bad("invalid_artifact", "artifact must be true or false.", index, "artifact")
    return Reading(
        code=vital.code,
        value=canonical,
        unit=vital.unit,
        observed_at=observed_at,
        artifact=artifact,
    )


def _observed_at_parse(raw: object, *, index: int, now: dt.datetime) -> dt.datetime:
    if not isinstance(raw, str):
        raise _bad(
            "invalid_observed_at", "observed_at must be an ISO 8601 string.", index, "observed_at"
        )
    try:
        observed_at = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(
            "invalid_observed_at",
            f"observed_at {raw!r} is not an ISO 8601 date-time.",
            index,
            "observed_at",
        ) from None
    if observed_at.tzinfo is None or observed_at.utcoffset() is None:
        raise _bad(
            "observed_at_without_offset",
            "observed_at must carry a UTC offset (e.g. 2026-11-21T10:00:00Z).",
            index,
            "observed_at",
        )
    observed_at = observed_at.astimezone(dt.UTC)
    if observed_at < EARLIEST_OBSERVED_AT:
        raise _bad(
            "observed_at_implausible",
            "observed_at is before 2020: the device clock is not set.",
            index,
            "observed_at",
        )
    if observed_at > now + MAX_FUTURE_SKEW:
        raise _bad(
            "observed_at_in_future",
            "observed_at is more than 2 minutes ahead of the server clock; check the device clock.",
            index,
            "observed_at",
        )
    return observed_at
