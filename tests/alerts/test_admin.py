"""The administrators' admin for alert rules, alerts and NEWS2, and the patient page's alerting."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.models import Alert, AlertEvent, AlertRule, News2Score, PatientAlertState
from monitoring import vitals
from monitoring.models import Observation
from patients.models import Admission, Bed, Patient
from tests import factories

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

RULES = reverse("admin:alerts_alertrule_changelist")
ADD_RULE = reverse("admin:alerts_alertrule_add")
ALERTS = reverse("admin:alerts_alert_changelist")
PATIENTS = reverse("admin:patients_patient_changelist")

SPO2 = vitals.SPO2.code
HEART_RATE = vitals.HEART_RATE.code


@pytest.fixture
def administrator() -> User:
    return factories.administrator()


@pytest.fixture
def admin_browser(administrator: User) -> Client:
    browser = Client()
    browser.force_login(administrator)
    return browser


@pytest.fixture
def default_rules() -> None:
    # Transactional tests elsewhere may have flushed the rules the data migration created.
    default_rules_ensure(AlertRule)


def _messages(response: Response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _queries(browser: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url)
    assert response.status_code == 200
    return len(captured)


def _rule_form(**values: object) -> dict[str, object]:
    form: dict[str, object] = {
        "name": "Heart rate out of range",
        "kind": AlertRule.Kind.THRESHOLD,
        "code": HEART_RATE,
        "low": "40",
        "high": "140",
        "clear_low": "",
        "clear_high": "",
        "priority": "medium",
        "sustain_seconds": "10",
        "enabled": "on",
        "ward": "",
        "patient": "",
    }
    form.update(values)
    return form


def _alert(
    *,
    patient: Patient,
    rule: AlertRule,
    bed: Bed | None = None,
    state: str = Alert.State.ACTIVE,
    value: float = 85.0,
    **fields: Any,
) -> Alert:
    return Alert.objects.create(
        patient=patient,
        rule=rule,
        bed=bed,
        priority=rule.priority,
        state=state,
        message=f"{rule.name}: {value:g}",
        code=rule.code,
        value=value,
        unit="%",
        fired_at=timezone.now() - dt.timedelta(minutes=5),
        **fields,
    )


def _spo2_rule() -> AlertRule:
    return AlertRule.objects.create(
        name="SpO2 low (test)", code=SPO2, low=90, clear_low=92, priority="high"
    )


# Alert rules ----------------------------------------------------------------------------------


def test_it_creates_a_threshold_rule_through_the_add_form_and_logs_it(
    admin_browser: Client, administrator: User
) -> None:
    ward = factories.ward()
    response = admin_browser.post(
        ADD_RULE, _rule_form(ward=ward.pk, clear_low="45", clear_high="130")
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = AlertRule.objects.get(name="Heart rate out of range")
    assert (rule.kind, rule.code, rule.scope) == ("threshold", HEART_RATE, "ward")
    assert (rule.low, rule.high, rule.clear_low, rule.clear_high) == (40, 140, 45, 130)
    entry = LogEntry.objects.get(object_id=str(rule.pk), action_flag=ADDITION)
    assert entry.user == administrator


def test_it_logs_a_change_to_a_rule_in_the_admin_history(
    admin_browser: Client, default_rules: None
) -> None:
    rule = AlertRule.objects.get(name="SpO2 below 90 %", patient=None, ward=None)
    change = reverse("admin:alerts_alertrule_change", args=[rule.pk])
    response = admin_browser.post(
        change,
        _rule_form(name=rule.name, code=SPO2, low="88", high="", clear_low="91", priority="high"),
    )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.low, rule.clear_low) == (88, 91)
    entry = LogEntry.objects.get(object_id=str(rule.pk), action_flag=CHANGE)
    assert "Low" in entry.get_change_message()
    history = admin_browser.get(reverse("admin:alerts_alertrule_history", args=[rule.pk]))
    assert "Low" in history.content.decode()


@pytest.mark.parametrize(
    ("values", "error"),
    [
        pytest.param(
            {"code": ""}, "A threshold rule needs the vital sign it watches.", id="no-code"
        ),
        pytest.param(
            {"low": "", "high": ""},
            "A threshold rule needs a low limit, a high limit, or both.",
            id="no-limit",
        ),
        pytest.param(
            {"clear_low": "35"},
            "A low alarm must clear at or above its low limit (40), not below it.",
            id="clear-low-below-low",
        ),
        pytest.param(
            {"clear_high": "150"},
            "A high alarm must clear at or below its high limit (140), not above it.",
            id="clear-high-above-high",
        ),
        pytest.param(
            {"low": "140", "high": "40"},
            "The high limit must be above the low limit (140).",
            id="low-above-high",
        ),
        pytest.param(
            {"code": SPO2, "low": "90", "high": "105"},
            "readings lie between 0 and 100 %; a limit of 105 is never reached.",
            id="limit-outside-plausible-band",
        ),
        pytest.param(
            {"ward": "WARD", "patient": "PATIENT"},
            "A rule applies to one ward or to one patient, not both",
            id="ward-and-patient",
        ),
        pytest.param(
            {"kind": "news2_7", "code": "", "low": "", "high": "", "patient": "PATIENT"},
            "Only vital-sign threshold rules can be set per patient",
            id="news2-per-patient",
        ),
        pytest.param(
            {"kind": "device_offline", "code": "", "low": "", "high": "", "patient": "PATIENT"},
            "Only vital-sign threshold rules can be set per patient",
            id="offline-per-patient",
        ),
        pytest.param(
            {"kind": "news2_5_6", "low": "", "high": ""},
            "NEWS2 and device-offline rules take no vital sign: leave it empty.",
            id="news2-with-code",
        ),
        pytest.param(
            {"kind": "device_offline", "code": "", "high": ""},
            "NEWS2 and device-offline rules take no limits: leave it empty.",
            id="offline-with-limit",
        ),
    ],
)
def test_it_refuses_an_invalid_rule_with_a_readable_error_and_stores_nothing(
    admin_browser: Client, values: dict[str, object], error: str
) -> None:
    ward, patient = factories.ward(), factories.patient()
    stand_ins = {"WARD": ward.pk, "PATIENT": patient.pk}
    form = _rule_form(**{k: stand_ins.get(str(v), v) for k, v in values.items()})
    before = AlertRule.objects.count()

    response = admin_browser.post(ADD_RULE, form)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors.as_text()
    assert error in errors
    assert "Constraint" not in errors  # the database's wording is never what the user reads
    assert error.split("(")[0].split(";")[0] in response.content.decode()
    assert AlertRule.objects.count() == before


def test_it_lists_and_filters_rules_by_scope(admin_browser: Client, default_rules: None) -> None:
    ward, patient = factories.ward(code="resp"), factories.patient(mrn="COPD0001")
    AlertRule.objects.create(name="Ward HR", code=HEART_RATE, high=130, priority="low", ward=ward)
    AlertRule.objects.create(name="Own SpO2", code=SPO2, low=88, priority="high", patient=patient)

    def listed(**query: object) -> set[str]:
        response = admin_browser.get(RULES, query)
        assert response.status_code == 200
        return {rule.name for rule in response.context["cl"].result_list}

    assert listed(scope="patient") == {"Own SpO2"}
    assert listed(scope="ward") == {"Ward HR"}
    assert "SpO2 below 90 %" in listed(scope="hospital")
    assert not {"Own SpO2", "Ward HR"} & listed(scope="hospital")
    page = admin_browser.get(RULES).content.decode()
    assert "Patient COPD0001" in page
    assert "Ward resp" in page


def test_it_lists_rules_with_as_many_queries_for_one_as_for_many(admin_browser: Client) -> None:
    _spo2_rule()
    with_one = _queries(admin_browser, RULES)

    wards = [factories.ward() for _ in range(5)]
    patients = [factories.patient() for _ in range(5)]
    for n in range(30):
        AlertRule.objects.create(
            name=f"HR {n}",
            code=HEART_RATE,
            high=130 + n,
            priority="medium",
            ward=wards[n % 5] if n % 3 == 0 else None,
            patient=patients[n % 5] if n % 3 == 1 else None,
        )

    # The ward filter lists the wards in one query, however many there are.
    assert _queries(admin_browser, RULES) == with_one


# Alerts ---------------------------------------------------------------------------------------


def test_it_shows_alerts_and_an_alerts_audit_trail_read_only(
    admin_browser: Client, administrator: User
) -> None:
    admission = factories.admitted_patient()
    alert = _alert(
        patient=admission.patient,
        rule=_spo2_rule(),
        bed=admission.bed,
        condition_cleared_at=timezone.now(),
        escalation_level=1,
    )
    fired = AlertEvent.objects.create(alert=alert, kind="fired", at=alert.fired_at, value=85)
    AlertEvent.objects.create(
        alert=alert, kind="escalated", at=alert.fired_at + dt.timedelta(minutes=1), value=84
    )

    listing = admin_browser.get(ALERTS)
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [alert]
    assert admission.patient.mrn in listing.content.decode()
    assert "85 %" in listing.content.decode()

    page = admin_browser.get(reverse("admin:alerts_alert_change", args=[alert.pk]))
    assert page.status_code == 200
    (events,) = page.context["inline_admin_formsets"]
    assert [form.original for form in events] == [fired, fired.alert.events.last()]
    assert not (events.has_add_permission or events.has_change_permission)
    content = page.content.decode()
    assert "Escalated" in content
    assert str(admission.bed) in content
    assert admin_browser.get(reverse("admin:alerts_alert_add")).status_code == 403


def test_it_filters_alerts_by_state_priority_and_ward(admin_browser: Client) -> None:
    rule = _spo2_rule()
    icu = factories.ward(code="icu")
    in_icu = factories.admitted_patient(factories.bed(icu))
    elsewhere = factories.admitted_patient()
    active = _alert(patient=in_icu.patient, rule=rule, bed=in_icu.bed)
    resolved = _alert(
        patient=elsewhere.patient, rule=rule, bed=elsewhere.bed, state=Alert.State.RESOLVED
    )

    def listed(**query: object) -> set[int]:
        response = admin_browser.get(ALERTS, query)
        assert response.status_code == 200
        return {a.pk for a in response.context["cl"].result_list}

    assert listed(state__exact="active") == {active.pk}
    assert listed(state__exact="resolved") == {resolved.pk}
    assert listed(bed__ward__id__exact=icu.pk) == {active.pk}
    assert listed(priority__exact="low") == set()
    assert listed(technical__exact="0") == {active.pk, resolved.pk}


def test_it_acknowledges_the_selected_alerts_and_reports_refusals(
    admin_browser: Client, administrator: User
) -> None:
    rule = _spo2_rule()
    active = _alert(patient=factories.patient(), rule=rule)
    earlier_acknowledger = factories.administrator()
    already = _alert(
        patient=factories.patient(),
        rule=rule,
        state=Alert.State.ACKNOWLEDGED,
        acknowledged_by=earlier_acknowledger,
        acknowledged_at=timezone.now(),
    )

    done = admin_browser.post(
        ALERTS,
        {"action": "acknowledge", "_selected_action": [active.pk, already.pk]},
        follow=True,
    )

    assert done.status_code == 200
    shown = _messages(done)
    assert len(shown) == 2
    assert shown[0].startswith(f"Alert for patient {already.patient.mrn} fired ")
    assert shown[0].endswith(
        "This alert is acknowledged; only an active alert can be acknowledged."
    )
    assert shown[1] == "Acknowledged 1 alert."
    active.refresh_from_db()
    assert active.state == Alert.State.ACKNOWLEDGED
    assert active.acknowledged_by == administrator
    event = AlertEvent.objects.get(alert=active, kind=AlertEvent.Kind.ACKNOWLEDGED)
    assert event.by == administrator
    already.refresh_from_db()
    assert already.acknowledged_by == earlier_acknowledger
    assert not AlertEvent.objects.filter(alert=already).exists()


def test_it_lists_50_alerts_with_as_many_queries_as_one(admin_browser: Client) -> None:
    rule = _spo2_rule()
    acknowledger = factories.administrator()
    first = factories.admitted_patient()
    _alert(patient=first.patient, rule=rule, bed=first.bed)
    with_one = _queries(admin_browser, ALERTS)

    for n in range(49):
        admission = factories.admitted_patient()
        _alert(
            patient=admission.patient,
            rule=rule
            if n % 2
            else AlertRule.objects.create(
                name=f"HR {n}", code=HEART_RATE, high=130, priority="medium"
            ),
            bed=admission.bed,
            state=Alert.State.ACKNOWLEDGED,
            acknowledged_by=acknowledger,
            acknowledged_at=timezone.now(),
        )
    assert Alert.objects.count() == 50

    assert _queries(admin_browser, ALERTS) == with_one
    assert _queries(admin_browser, ALERTS + "?state__exact=acknowledged") == with_one


# NEWS2 and events -----------------------------------------------------------------------------


def test_it_shows_news2_history_and_alert_events_read_only(admin_browser: Client) -> None:
    patient = factories.patient()
    score = News2Score.objects.create(
        patient=patient,
        observed_at=timezone.now(),
        total=6,
        complete=False,
        scale=1,
        risk="medium",
        parameters={},
    )
    alert = _alert(patient=patient, rule=_spo2_rule())
    AlertEvent.objects.create(alert=alert, kind="fired", at=alert.fired_at)

    scores = admin_browser.get(reverse("admin:alerts_news2score_changelist"), {"risk": "medium"})
    assert list(scores.context["cl"].result_list) == [score]
    assert (
        admin_browser.get(reverse("admin:alerts_news2score_change", args=[score.pk])).status_code
        == 200
    )
    assert admin_browser.get(reverse("admin:alerts_alertevent_changelist")).status_code == 200
    assert admin_browser.get(reverse("admin:alerts_news2score_add")).status_code == 403


# The patient page -----------------------------------------------------------------------------


def _effective_rules_table(browser: Client, patient: Patient) -> str:
    page = browser.get(reverse("admin:patients_patient_change", args=[patient.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    start = content.index('<table class="effective-alert-rules">')
    return content[start : content.index("</table>", start)]


def test_it_shows_the_rules_in_force_with_a_patients_own_rule_replacing_the_hospitals(
    admin_browser: Client, default_rules: None
) -> None:
    icu, other = factories.ward(code="icu"), factories.ward(code="other")
    admission = factories.admitted_patient(factories.bed(icu))
    patient = admission.patient
    AlertRule.objects.create(
        name="ICU tachycardia", code=HEART_RATE, high=140, priority="medium", ward=icu
    )
    AlertRule.objects.create(
        name="Other ward tachycardia", code=HEART_RATE, high=120, priority="low", ward=other
    )

    table = _effective_rules_table(admin_browser, patient)
    assert "SpO2 below 90 %" in table
    assert "ICU tachycardia" in table
    assert "Ward icu" in table
    assert "Other ward tachycardia" not in table

    AlertRule.objects.create(
        name="COPD SpO2 target 88–92 %",
        code=SPO2,
        low=88,
        clear_low=89,
        high=97,
        priority="high",
        patient=patient,
    )
    table = _effective_rules_table(admin_browser, patient)

    assert "COPD SpO2 target 88–92 %" in table
    assert "This patient" in table
    assert "&lt; 88 %, &gt; 97 %" in table
    assert "SpO2 below 90 %" not in table
    # Only SpO2 is replaced: NEWS2 and the other vital signs' rules still apply.
    assert "NEWS2 aggregate 7 or more" in table
    assert "NEWS2 aggregate 5–6" in table
    assert "ICU tachycardia" in table


def test_it_escapes_rule_names_on_the_patient_page(admin_browser: Client) -> None:
    patient = factories.patient()
    AlertRule.objects.create(
        name="<script>alert(1)</script>", code=SPO2, low=88, priority="high", patient=patient
    )
    table = _effective_rules_table(admin_browser, patient)
    assert "<script>" not in table
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table


def test_it_shows_the_current_news2_on_the_patient_page(admin_browser: Client) -> None:
    patient = factories.patient()
    url = reverse("admin:patients_patient_change", args=[patient.pk])
    assert "Not scored yet." in admin_browser.get(url).content.decode()

    PatientAlertState.objects.create(
        patient=patient,
        news2_total=5,
        news2_complete=False,
        news2_risk="medium",
        news2_at=timezone.now() - dt.timedelta(minutes=3),
    )
    content = admin_browser.get(url).content.decode()
    assert "at least 5, incomplete" in content
    assert "medium risk" in content
    assert "3\xa0minutes ago" in content


def _patient_form(patient: Patient, **values: object) -> dict[str, object]:
    form: dict[str, object] = {
        "mrn": patient.mrn,
        "family_name": patient.family_name,
        "given_name": patient.given_name,
        "date_of_birth": patient.date_of_birth.isoformat(),
        "sex": patient.sex,
        "admissions-TOTAL_FORMS": "0",
        "admissions-INITIAL_FORMS": "0",
        "alert_rules-TOTAL_FORMS": "0",
        "alert_rules-INITIAL_FORMS": "0",
    }
    form.update(values)
    return form


def _inline_rule(n: int, **values: object) -> dict[str, object]:
    rule: dict[str, object] = {
        "name": "COPD SpO2 target",
        "code": SPO2,
        "low": "88",
        "high": "",
        "clear_low": "89",
        "clear_high": "",
        "priority": "high",
        "sustain_seconds": "10",
        "enabled": "on",
    }
    rule.update(values)
    return {f"alert_rules-{n}-{key}": value for key, value in rule.items()}


def test_it_adds_a_patients_own_threshold_rule_and_scale_2_on_the_patient_page(
    admin_browser: Client, default_rules: None
) -> None:
    patient = factories.patient()
    response = admin_browser.post(
        reverse("admin:patients_patient_change", args=[patient.pk]),
        _patient_form(
            patient, news2_spo2_scale2="on", **{"alert_rules-TOTAL_FORMS": "1"}, **_inline_rule(0)
        ),
    )

    assert response.status_code == 302
    rule = AlertRule.objects.get(patient=patient)
    assert (rule.kind, rule.code, rule.low, rule.clear_low) == ("threshold", SPO2, 88, 89)
    assert rule.ward is None
    patient.refresh_from_db()
    assert patient.news2_spo2_scale2
    entry = LogEntry.objects.get(object_id=str(patient.pk), action_flag=CHANGE)
    assert "COPD SpO2 target" in entry.get_change_message()
    # The rule's own history says so too.
    entry = LogEntry.objects.get(object_id=str(rule.pk), action_flag=ADDITION)
    assert entry.get_change_message() == f"Added on the page of patient {patient.mrn}."

    response = admin_browser.post(
        reverse("admin:patients_patient_change", args=[patient.pk]),
        _patient_form(
            patient,
            news2_spo2_scale2="on",
            **{"alert_rules-TOTAL_FORMS": "1", "alert_rules-INITIAL_FORMS": "1"},
            **_inline_rule(0, id=rule.pk, patient=patient.pk, low="87", clear_low="88"),
        ),
    )
    assert response.status_code == 302
    entry = LogEntry.objects.get(object_id=str(rule.pk), action_flag=CHANGE)
    assert entry.get_change_message() == (
        f"Changed low, clear low on the page of patient {patient.mrn}."
    )


def test_it_refuses_an_invalid_own_rule_on_the_patient_page_readably(
    admin_browser: Client,
) -> None:
    patient = factories.patient()
    response = admin_browser.post(
        reverse("admin:patients_patient_change", args=[patient.pk]),
        _patient_form(patient, **{"alert_rules-TOTAL_FORMS": "1"}, **_inline_rule(0, low="92")),
    )

    assert response.status_code == 200
    assert "A low alarm must clear at or above its low limit (92)" in response.content.decode()
    assert not AlertRule.objects.filter(patient=patient).exists()


def test_it_keeps_the_patient_add_page_free_of_alerting_parts(admin_browser: Client) -> None:
    page = admin_browser.get(reverse("admin:patients_patient_add"))
    assert page.status_code == 200
    inline_models = [inline.opts.model for inline in page.context["inline_admin_formsets"]]
    assert AlertRule not in inline_models
    assert "news2_spo2_scale2" in page.context["adminform"].form.fields


def test_it_lists_200_patients_with_as_many_queries_as_one(
    admin_browser: Client, default_rules: None
) -> None:
    icu = factories.ward(code="icu")
    first = factories.admitted_patient(factories.bed(icu))
    AlertRule.objects.create(name="Own", code=SPO2, low=88, priority="high", patient=first.patient)
    PatientAlertState.objects.create(patient=first.patient, news2_total=3)
    with_one = _queries(admin_browser, PATIENTS)

    beds = Bed.objects.bulk_create(Bed(ward=icu, label=f"bulk-{n}") for n in range(100))
    patients = Patient.objects.bulk_create(
        Patient(
            mrn=f"BULK{n:05d}",
            family_name=f"Bulk{n}",
            given_name="Patient",
            date_of_birth=dt.date(1950, 1, 1),
        )
        for n in range(199)
    )
    Admission.objects.bulk_create(
        Admission(patient=patient, bed=bed, admitted_at=timezone.now())
        for patient, bed in zip(patients, beds, strict=False)
    )
    AlertRule.objects.bulk_create(
        AlertRule(name=f"Own {n}", code=SPO2, low=88, priority="high", patient=patient)
        for n, patient in enumerate(patients[:50])
    )
    assert Patient.objects.count() == 200

    assert _queries(admin_browser, PATIENTS) == with_one


# Recording air/oxygen and consciousness --------------------------------------------------------


def _record(browser: Client, *patients: Patient, confirm: bool = True, **form: object) -> Response:
    data: dict[str, object] = {
        "action": "record_observations",
        "_selected_action": [p.pk for p in patients],
    }
    if confirm:
        data["apply"] = "yes"
    data.update(form)
    return browser.post(PATIENTS, data, follow=True)


def test_it_records_air_or_oxygen_and_consciousness_entered_by_the_user(
    admin_browser: Client, administrator: User
) -> None:
    patient = factories.patient()

    page = _record(admin_browser, patient, confirm=False)
    assert page.status_code == 200
    content = page.content.decode()
    for label in ("Air", "Oxygen", "Alert", "new Confusion", "Voice", "Pain", "Unresponsive"):
        assert label in content

    done = _record(admin_browser, patient, air_or_oxygen="1", consciousness="2")

    assert done.redirect_chain[-1][0].startswith(PATIENTS)
    assert _messages(done) == [
        f"Recorded for patient {patient.mrn}: Air or oxygen: Oxygen (supplemental); "
        "Consciousness (ACVPU): Voice."
    ]
    recorded = {
        o.code: o for o in Observation.objects.filter(patient=patient).select_related("entered_by")
    }
    assert set(recorded) == {vitals.SUPPLEMENTAL_OXYGEN.code, vitals.CONSCIOUSNESS.code}
    oxygen = recorded[vitals.SUPPLEMENTAL_OXYGEN.code]
    assert (oxygen.value, oxygen.unit) == (1, vitals.SUPPLEMENTAL_OXYGEN.unit)
    consciousness = recorded[vitals.CONSCIOUSNESS.code]
    assert (consciousness.value, consciousness.unit) == (2, vitals.CONSCIOUSNESS.unit)
    assert {o.entered_by for o in recorded.values()} == {administrator}
    assert all(o.device_id is None for o in recorded.values())


def test_it_records_just_one_of_the_two_values(admin_browser: Client) -> None:
    patient = factories.patient()
    done = _record(admin_browser, patient, air_or_oxygen="0")
    assert _messages(done) == [f"Recorded for patient {patient.mrn}: Air or oxygen: Air."]
    (observation,) = Observation.objects.filter(patient=patient)
    assert (observation.code, observation.value) == (vitals.SUPPLEMENTAL_OXYGEN.code, 0)


def test_it_asks_again_when_neither_value_is_chosen(admin_browser: Client) -> None:
    patient = factories.patient()
    page = _record(admin_browser, patient)
    assert page.status_code == 200
    assert "Choose air or oxygen, a level of consciousness, or both." in page.content.decode()
    assert not Observation.objects.exists()


def test_it_records_for_exactly_one_patient_at_a_time(admin_browser: Client) -> None:
    first, second = factories.patient(), factories.patient()
    done = _record(admin_browser, first, second, consciousness="0")
    assert _messages(done) == [
        "Recording observations acts on exactly one patient: select only that patient and try "
        "again."
    ]
    assert not Observation.objects.exists()
