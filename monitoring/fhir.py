"""FHIR R4 read-only façade: resource builders and the Observation search.

Pure functions over the models; the HTTP side (auth, negotiation, errors) is
``monitoring/fhir_views.py``. Resources are plain dicts (no FHIR library at run time); the
tests validate every response with the ``fhir.resources`` R4B models.

Choices, documented here because other hospital systems depend on them:

- **Patient.id** is the patient's public UUID; the MRN is an ``identifier`` (type MR) in the
  system named by the ``FHIR_MRN_SYSTEM`` setting (default ``urn:portal:mrn``; a hospital sets
  its own OID, ``urn:oid:…``).
- **Observation.id** is opaque: the first 26 characters of the base32 HMAC-SHA256 of the row's
  primary key, keyed by SECRET_KEY (``salted_hmac``). It is stable while SECRET_KEY stays,
  and unlike the primary key it does not reveal how many readings the portal holds. It is
  one-way, so ``GET /fhir/Observation/<id>`` is not served (that needs a stored, indexed id
  column); observations are reached by search, and ``fullUrl`` still names the RESTful
  location as FHIR requires.
- **Codings**: vital signs carry their LOINC code and the IEEE 11073 MDC code
  (``urn:iso:std:iso:11073:10101``, numeric code, ``display`` = the MDC reference id); SpO2
  also carries LOINC 2708-6, which the base oxygen-saturation profile expects
  (../shared/clinical.md). They claim the base vital-signs profile, category ``vital-signs``.
- **Air or oxygen and ACVPU** use the catalogue's local codes (``urn:portal:local``) and
  category ``survey``: they are nurse-recorded NEWS2 assessment inputs, not measurements
  from the vital-signs value set, so claiming ``vital-signs`` (whose profile requires a
  LOINC code from that set) would make them non-conformant. Their value is the catalogue's
  number (0 air / 1 oxygen; ACVPU 0–4 = A, C, V, P, U) as a UCUM-annotated Quantity.
- **Artifacts** (readings the device marked unreliable) are returned, not hidden: the record
  keeps them. They carry ``meta.tag`` ``urn:portal:local|device-artifact`` and a note.
- **Search** answers ``patient`` (or ``subject``; one patient, required), ``code``,
  ``category``, ``date`` (eq, ge, gt, le, lt; date-only values are UTC days; a time needs an
  offset), ``_count`` (default 50, at most 1000; larger values are lowered to 1000),
  ``_sort=date`` and the paging ``_cursor``. Any other parameter is refused (400) rather
  than ignored: a silently dropped filter would hand back more of a patient's record than
  the caller asked for. ``total`` is omitted (a count over a patient's history is a scan).
- **Paging** is keyset on ``(observed_at, pk)``, never OFFSET; the ``_cursor`` is signed
  (``django.core.signing``) and the pk inside it is masked, so it leaks no more than the id.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Q
from django.utils.crypto import salted_hmac

from monitoring.models import Observation
from monitoring.vitals import SPO2, VITALS, CodeSystem, Vital
from patients.models import Patient

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
UCUM_SYSTEM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
# The FHIR base oxygen-saturation profile expects 2708-6 beside pulse oximetry's 59408-5.
SPO2_BASE_LOINC = "2708-6"
DEFAULT_MRN_SYSTEM = "urn:portal:mrn"
ARTIFACT_TAG = "device-artifact"
DEFAULT_COUNT = 50
MAX_COUNT = 1000
OBSERVATION_ID_LENGTH = 26

CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "survey": "Survey"}
SEARCH_PARAMETERS = frozenset(
    {"patient", "subject", "code", "category", "date", "_count", "_sort", "_cursor", "_format"}
)


class SearchError(ValueError):
    """A search parameter the server cannot answer: 400 with an OperationOutcome.

    ``issue_code`` is the FHIR IssueType: ``invalid`` (a malformed value) or
    ``not-supported`` (a parameter, modifier or prefix this server does not implement).
    """

    def __init__(self, detail: str, *, issue_code: str = "invalid") -> None:
        super().__init__(detail)
        self.detail = detail
        self.issue_code = issue_code


# --- identifiers and times ---------------------------------------------------------------


def mrn_system() -> str:
    return getattr(settings, "FHIR_MRN_SYSTEM", DEFAULT_MRN_SYSTEM)


def observation_fhir_id(pk: int) -> str:
    digest = salted_hmac("monitoring.fhir.observation-id", str(pk), algorithm="sha256").digest()
    return base64.b32encode(digest).decode("ascii").lower()[:OBSERVATION_ID_LENGTH]


def fhir_instant(moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.UTC)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


# --- resources ----------------------------------------------------------------------------


def patient_resource(patient: Patient) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": str(patient.public_id),
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {
                            "system": IDENTIFIER_TYPE_SYSTEM,
                            "code": "MR",
                            "display": "Medical record number",
                        }
                    ]
                },
                "system": mrn_system(),
                "value": patient.mrn,
            }
        ],
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "gender": patient.sex,
        "birthDate": patient.date_of_birth.isoformat(),
    }


def vital_category(vital: Vital) -> str:
    return "vital-signs" if vital.system is CodeSystem.LOINC else "survey"


def vital_codings(vital: Vital) -> list[dict[str, str]]:
    """The vital's codings, most specific first. LOINC displays are left out rather than
    paraphrased: ``code.text`` carries the catalogue's name."""
    if vital.system is not CodeSystem.LOINC:
        return [{"system": vital.system.value, "code": vital.code, "display": vital.name}]
    codings = [{"system": CodeSystem.LOINC.value, "code": vital.code}]
    if vital.code == SPO2.code:
        codings.append({"system": CodeSystem.LOINC.value, "code": SPO2_BASE_LOINC})
    if vital.mdc_code is not None:
        codings.append(
            {"system": MDC_SYSTEM, "code": str(vital.mdc_code), "display": vital.mdc_name}
        )
    return codings


def observation_resource(observation: Observation, *, patient_public_id: str) -> dict[str, Any]:
    """One reading as a FHIR Observation (vital-signs profile for LOINC vitals).

    Reads ``observation.device`` and ``observation.entered_by``: select them with the row.
    """
    vital = VITALS[observation.code]
    category = vital_category(vital)
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_fhir_id(observation.pk),
    }
    meta: dict[str, Any] = {}
    if category == "vital-signs":
        meta["profile"] = [VITAL_SIGNS_PROFILE]
    if observation.artifact:
        meta["tag"] = [
            {
                "system": CodeSystem.LOCAL.value,
                "code": ARTIFACT_TAG,
                "display": "Marked unreliable by the device",
            }
        ]
    if meta:
        resource["meta"] = meta
    resource.update(
        {
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": CATEGORY_SYSTEM,
                            "code": category,
                            "display": CATEGORY_DISPLAY[category],
                        }
                    ],
                    "text": CATEGORY_DISPLAY[category],
                }
            ],
            "code": {"coding": vital_codings(vital), "text": vital.name},
            "subject": {"reference": f"Patient/{patient_public_id}"},
            "effectiveDateTime": fhir_instant(observation.observed_at),
            "issued": fhir_instant(observation.received_at),
            "valueQuantity": {
                "value": observation.value,
                "unit": observation.unit,
                "system": UCUM_SYSTEM,
                "code": observation.unit,
            },
        }
    )
    if observation.device is not None:
        resource["device"] = {"reference": f"Device/{observation.device.public_id}"}
    if observation.entered_by is not None:
        staff = observation.entered_by
        resource["performer"] = [
            {"type": "Practitioner", "display": staff.get_full_name() or staff.get_username()}
        ]
    if observation.artifact:
        resource["note"] = [{"text": "The device marked this reading as unreliable (artifact)."}]
    return resource


def searchset_bundle(
    *, entries: Iterable[tuple[str, dict[str, Any]]], self_url: str, next_url: str | None
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}}
            for full_url, resource in entries
        ],
    }


def operation_outcome(*, issue_code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": issue_code, "diagnostics": diagnostics}],
    }


def capability_statement(*, base_url: str, date: dt.date) -> dict[str, Any]:
    search_params = [
        ("patient", "reference", "The patient (one per search; required)"),
        ("subject", "reference", "Same as patient"),
        ("code", "token", "LOINC, MDC or local code; system|code or code"),
        ("category", "token", "vital-signs or survey"),
        ("date", "date", "eq, ge, gt, le, lt; repeat to bound a range"),
        ("_count", "number", f"Page size, default {DEFAULT_COUNT}, at most {MAX_COUNT}"),
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date.isoformat(),
        "kind": "instance",
        "implementation": {"description": "Ward portal FHIR read-only access", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {
                        "type": "Observation",
                        "supportedProfile": [VITAL_SIGNS_PROFILE],
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            {"name": name, "type": kind, "documentation": text}
                            for name, kind, text in search_params
                        ],
                    },
                ],
            }
        ],
    }


# --- search -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservationSearch:
    """A parsed Observation search: one patient, catalogue codes, [observed_from, before)."""

    patient_public_id: uuid.UUID
    codes: frozenset[str]
    observed_from: dt.datetime | None
    observed_before: dt.datetime | None
    count: int
    after: tuple[dt.datetime, int] | None  # keyset position: the last row of the prior page


def _index_codings() -> dict[str, frozenset[tuple[str, str]]]:
    return {
        code: frozenset((c["system"], c["code"]) for c in vital_codings(vital))
        for code, vital in VITALS.items()
    }


_CODINGS = _index_codings()
_CATEGORY_SYSTEM_PREFIX = CATEGORY_SYSTEM + "|"


def _single(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise SearchError(f"{name} may be given once.")
    return values[0] if values else None


def _tokens(value: str, name: str) -> list[str]:
    tokens = [token.strip() for token in value.split(",")]
    if not all(tokens):
        raise SearchError(f"{name} has an empty value.")
    return tokens


def _codes_matching(token: str) -> set[str]:
    """Catalogue codes whose codings match a token: ``system|code``, ``system|``, ``code``."""
    if "|" in token:
        system, _, code = token.partition("|")
    else:
        system, code = None, token
    if system == "":
        return set()  # "|code" asks for a coding without a system; every coding here has one
    return {
        vital_code
        for vital_code, codings in _CODINGS.items()
        if any(
            (system is None or system == c_system) and (code == "" or code == c_code)
            for c_system, c_code in codings
        )
    }


def _codes_in_category(token: str) -> set[str]:
    category = token.removeprefix(_CATEGORY_SYSTEM_PREFIX)
    return {code for code, vital in VITALS.items() if vital_category(vital) == category}


def parse_patient_reference(value: str) -> uuid.UUID:
    reference = value.strip()
    if "," in reference:
        raise SearchError("Search one patient at a time.", issue_code="not-supported")
    # "Patient/<id>", an absolute ".../Patient/<id>" or the bare id.
    head, _, tail = reference.rpartition("/")
    if head and not head.endswith("Patient"):
        raise SearchError("patient must reference a Patient.")
    try:
        return uuid.UUID(tail)
    except ValueError:
        raise SearchError("patient is not a valid Patient id.") from None


_DATE_VALUE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _months_later(moment: dt.datetime, months: int) -> dt.datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


def parse_date_range(value: str) -> tuple[dt.datetime, dt.datetime]:
    """The half-open range [start, end) a FHIR date search value stands for, by its precision.

    Raises SearchError for a malformed value or a time without an offset (the portal never
    guesses a time zone for a clinical time; a date alone is a UTC day).
    """
    # An unencoded "+" in a query string arrives as a space; read it as the offset it was.
    text = value.replace(" ", "+")
    match = _DATE_VALUE.fullmatch(text)
    if match is None:
        raise SearchError(f"date {value!r} is not a FHIR date or dateTime.")
    part = match.groupdict()
    if part["hour"] is not None and part["offset"] is None:
        raise SearchError(f"date {value!r} has a time but no time zone offset.")
    try:
        zone = dt.UTC
        if part["offset"] not in (None, "Z"):
            sign = -1 if part["offset"][0] == "-" else 1
            hours, minutes = int(part["offset"][1:3]), int(part["offset"][4:6])
            if hours > 14 or minutes > 59:
                raise ValueError("offset out of range")
            zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        fraction = part["fraction"] or ""
        start = dt.datetime(
            int(part["year"]),
            int(part["month"] or 1),
            int(part["day"] or 1),
            int(part["hour"] or 0),
            int(part["minute"] or 0),
            int(part["second"] or 0),
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=zone,
        )
        if part["month"] is None:
            end = _months_later(start, 12)
        elif part["day"] is None:
            end = _months_later(start, 1)
        elif part["hour"] is None:
            end = start + dt.timedelta(days=1)
        elif part["second"] is None:
            end = start + dt.timedelta(minutes=1)
        elif not fraction:
            end = start + dt.timedelta(seconds=1)
        else:
            end = start + dt.timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    except (ValueError, OverflowError):
        raise SearchError(f"date {value!r} is not a valid date or time.") from None
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _date_bounds(values: list[str]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Intersect every ``date`` value into one half-open range (None: unbounded)."""
    lower: dt.datetime | None = None
    upper: dt.datetime | None = None
    for raw in values:
        prefix = raw[:2] if raw[:2] in _DATE_PREFIXES else "eq"
        if prefix not in ("eq", "gt", "lt", "ge", "le"):
            raise SearchError(
                f"date prefix {prefix!r} is not supported.", issue_code="not-supported"
            )
        start, end = parse_date_range(raw[2:] if raw[:2] == prefix else raw)
        low, high = {
            "eq": (start, end),
            "ge": (start, None),
            "gt": (end, None),
            "le": (None, end),
            "lt": (None, start),
        }[prefix]
        if low is not None:
            lower = low if lower is None else max(lower, low)
        if high is not None:
            upper = high if upper is None else min(upper, high)
    return lower, upper


def _count(value: str | None) -> int:
    if value is None:
        return DEFAULT_COUNT
    if not value.isdigit() or int(value) < 1:
        raise SearchError("_count must be a whole number of at least 1.")
    return min(int(value), MAX_COUNT)


def observation_search_parse(params: dict[str, list[str]]) -> ObservationSearch:
    """Read an Observation search's query parameters (name → values, as repeated)."""
    unknown = sorted(set(params) - SEARCH_PARAMETERS)
    if unknown:
        raise SearchError(
            f"Unsupported search parameter(s): {', '.join(unknown)}.", issue_code="not-supported"
        )
    patient = _single(params, "patient")
    subject = _single(params, "subject")
    if patient is not None and subject is not None:
        raise SearchError("Give patient or subject, not both.")
    reference = patient if patient is not None else subject
    if reference is None:
        raise SearchError("patient is required: search one patient's observations.")
    codes = set(VITALS)
    for value in params.get("code", []):  # repeated: all must hold; commas: any may
        codes &= set().union(*(_codes_matching(t) for t in _tokens(value, "code")))
    for value in params.get("category", []):
        codes &= set().union(*(_codes_in_category(t) for t in _tokens(value, "category")))
    sort = _single(params, "_sort")
    if sort not in (None, "date"):
        raise SearchError(
            "Only _sort=date (oldest first) is supported.", issue_code="not-supported"
        )
    observed_from, observed_before = _date_bounds(params.get("date", []))
    cursor = _single(params, "_cursor")
    return ObservationSearch(
        patient_public_id=parse_patient_reference(reference),
        codes=frozenset(codes),
        observed_from=observed_from,
        observed_before=observed_before,
        count=_count(_single(params, "_count")),
        after=cursor_load(cursor) if cursor is not None else None,
    )


# --- paging cursor ------------------------------------------------------------------------

_CURSOR_SALT = "monitoring.fhir.observation-cursor"


def _pk_mask(stamp: str) -> int:
    # Signing authenticates the cursor but does not hide it (it is base64): masking the pk
    # with a secret keyed on the timestamp keeps row counts out of it, as out of the id.
    digest = salted_hmac(_CURSOR_SALT + ".mask", stamp, algorithm="sha256").digest()
    return int.from_bytes(digest[:8], "big")


def cursor_dump(*, observed_at: dt.datetime, pk: int) -> str:
    stamp = observed_at.astimezone(dt.UTC).isoformat()
    return signing.dumps([stamp, pk ^ _pk_mask(stamp)], salt=_CURSOR_SALT)


def cursor_load(value: str) -> tuple[dt.datetime, int]:
    try:
        stamp, masked = signing.loads(value, salt=_CURSOR_SALT)
        if not isinstance(stamp, str) or not isinstance(masked, int):
            raise ValueError("malformed cursor")
        observed_at = dt.datetime.fromisoformat(stamp)
    except (signing.BadSignature, ValueError, TypeError):
        raise SearchError("_cursor is not a cursor this server issued.") from None
    return observed_at, masked ^ _pk_mask(stamp)


# --- reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservationPage:
    observations: list[Observation]
    next_cursor: str | None


def observation_page(*, patient: Patient, search: ObservationSearch) -> ObservationPage:
    """One page of the patient's observations, oldest first: one query whatever its size.

    Keyset pagination on (observed_at, pk): each page starts where the last one ended, so a
    reading arriving meanwhile neither shifts nor repeats rows, and deep pages cost no more
    than the first. ``observed_at >= t`` leads the keyset condition so MariaDB can range-scan
    ``obs_patient_code_time`` (its entries end with the primary key, giving the tie-break).
    """
    rows = (
        Observation.objects.filter(patient=patient, code__in=sorted(search.codes))
        .select_related("device", "entered_by")
        .only(
            "pk",
            "code",
            "value",
            "unit",
            "observed_at",
            "received_at",
            "artifact",
            "device__public_id",
            "entered_by__username",
            "entered_by__first_name",
            "entered_by__last_name",
        )
        .order_by("observed_at", "pk")
    )
    if search.observed_from is not None:
        rows = rows.filter(observed_at__gte=search.observed_from)
    if search.observed_before is not None:
        rows = rows.filter(observed_at__lt=search.observed_before)
    if search.after is not None:
        at, pk = search.after
        rows = rows.filter(observed_at__gte=at).filter(Q(observed_at__gt=at) | Q(pk__gt=pk))
    page = list(rows[: search.count + 1])
    if len(page) <= search.count:
        return ObservationPage(observations=page, next_cursor=None)
    page = page[: search.count]
    last = page[-1]
    return ObservationPage(
        observations=page, next_cursor=cursor_dump(observed_at=last.observed_at, pk=last.pk)
    )
