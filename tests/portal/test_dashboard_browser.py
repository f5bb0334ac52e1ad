"""The ward dashboard in a real browser, end to end, once: Debian's chromium driven by
Playwright against daphne serving the test database. A clinician logs in, watches a reading
arrive, sees readings raise a high-priority alert, acknowledges it, finds the acknowledgement
in the patient's history, and loses the ward; a clinician of another ward is refused."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from alerts.defaults import default_rules_ensure
from alerts.models import AlertEvent, AlertRule
from monitoring.services import device_token_issue
from monitoring.vitals import VITALS
from patients.models import Admission, Ward, WardAccess
from tests import factories
from tests.processes import asgi_serving, child_process_environment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
PASSWORD = "test-password-123"  # tests/factories.py
HEART_RATE, SPO2 = "8867-4", "59408-5"
STALE = re.compile(r"\bstale\b")

T = TypeVar("T")


@pytest.fixture
def portal_url() -> Iterator[str]:
    """daphne on a free port, on the test database and the suite's Redis; Celery tasks run
    in-process (no broker), so readings are evaluated inside this daphne."""
    with asgi_serving(
        "config.asgi:application",
        ready_path="/accounts/login/",
        environment=child_process_environment(CELERY_BROKER_URL=""),
    ) as url:
        yield url


@contextmanager
def _chromium() -> Iterator[Any]:
    """Debian's chromium (never ``playwright install``). Started only once the test data is
    written: while Playwright runs, this thread has an event loop, where Django refuses ORM
    calls."""
    if not CHROMIUM.exists():
        pytest.fail(
            "Browser tests need Debian's chromium (apt-get install chromium; bin/test does)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _in_thread(work: Callable[[], T]) -> T:
    """Run ORM work off the thread Playwright's event loop lives on (Django refuses database
    access from a thread with a running event loop)."""

    def run() -> T:
        try:
            return work()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


class Bedside:
    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Device {token}"})
        self.sent = 0

    def post(self, *readings: tuple[str, float, dt.datetime]) -> None:
        self.sent += 1
        response = self.client.post(
            "/api/v1/ingest/",
            json={
                "message_id": f"browser-{self.sent}",
                "observations": [
                    {
                        "code": code,
                        "value": value,
                        "unit": VITALS[code].unit,
                        "observed_at": at.isoformat(),
                    }
                    for code, value, at in readings
                ],
            },
        )
        assert response.status_code == 201, response.text


def _vital_set(*, heart_rate: float) -> list[tuple[str, float, dt.datetime]]:
    """A bedside monitor's usual readings, now (SpO2 aside)."""
    now = timezone.now()
    values = {
        HEART_RATE: heart_rate,
        "9279-1": 18,
        "8480-6": 128,
        "8462-4": 78,
        "8478-0": 95,
        "8310-5": 37.1,
    }
    return [(code, value, now) for code, value in values.items()]


def _history(*, minutes: int, heart_rate: float) -> list[tuple[str, float, dt.datetime]]:
    """A monitor's last minutes, one set every 10 s up to 40 s ago, gently varying (what the
    snapshot's sparklines draw)."""
    end = timezone.now() - dt.timedelta(seconds=40)
    readings = []
    for step in range(minutes * 6):
        at = end - dt.timedelta(seconds=10 * step)
        wave = math.sin(step / 5)
        readings += [
            (HEART_RATE, round(heart_rate + 4 * wave), at),
            ("9279-1", round(17 + wave), at),
            (SPO2, round(96 + wave), at),
            ("8480-6", round(126 + 5 * wave), at),
            ("8462-4", round(77 + 2 * wave), at),
            ("8478-0", round(93 + 3 * wave), at),
            ("8310-5", round(37.0 + 0.2 * wave, 1), at),
        ]
    return readings


def _log_in(page: Any, username: str) -> None:
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")


def test_it_shows_live_values_raises_and_acknowledges_an_alert_and_refuses_others(
    portal_url: str,
) -> None:
    default_rules_ensure(AlertRule)
    ward = factories.ward(code="browser-ward", name="Browser Ward")
    an_hour_ago = timezone.now() - dt.timedelta(hours=1)
    watched = factories.admitted_patient(factories.bed(ward, "Bed 01"), family_name="Ashdown")
    neighbour = factories.admitted_patient(factories.bed(ward, "Bed 02"), family_name="Birch")
    factories.bed(ward, "Bed 03")
    for admission in (watched, neighbour):
        admission.admitted_at = an_hour_ago
        admission.save(update_fields=["admitted_at"])
    bed_1 = Bedside(portal_url, device_token_issue(device=factories.device(watched.bed)))
    bed_2 = Bedside(portal_url, device_token_issue(device=factories.device(neighbour.bed)))
    nurse = factories.clinician(ward, username="nurse.browser")
    stranger = factories.clinician(factories.ward(), username="nurse.elsewhere")
    bed_1.post(*_history(minutes=10, heart_rate=78))
    bed_2.post(*_history(minutes=10, heart_rate=66))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with _chromium() as browser:
        _watch_raise_and_acknowledge(browser, portal_url, ward, watched, nurse, bed_1, bed_2)
        _refuse_another_wards_clinician(browser, portal_url, ward, stranger)

    event = AlertEvent.objects.select_related("alert__rule", "by").get(kind="acknowledged")
    assert (event.alert.rule.name, event.alert.patient_id, event.by) == (
        "SpO2 below 90 %",
        watched.patient_id,
        nurse,
    )
    assert not WardAccess.objects.filter(user=nurse, ward=ward).exists()


def _watch_raise_and_acknowledge(
    browser: Any,
    portal_url: str,
    ward: Ward,
    watched: Admission,
    nurse: User,
    bed_1: Bedside,
    bed_2: Bedside,
) -> None:
    from playwright.sync_api import expect

    dashboard_url = f"{portal_url}/wards/{ward.code}/"
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(dashboard_url)  # → the login page, then back here
        _log_in(page, nurse.username)
        page.wait_for_url(dashboard_url)
        expect(page.locator("#connection")).to_have_text("Connected — live", timeout=WAIT_MS)
        tile = page.locator(f'.bed-tile[data-bed="{watched.bed.public_id}"]')
        heart_rate = tile.locator(f'.vital[data-code="{HEART_RATE}"] .v-value')

        # A reading arrives: the tile shows it, then the next one.
        bed_1.post((HEART_RATE, 72, timezone.now()))
        expect(heart_rate).to_have_text("72", timeout=WAIT_MS)
        bed_1.post(*_vital_set(heart_rate=75))
        bed_2.post(*_vital_set(heart_rate=64), (SPO2, 97, timezone.now()))
        expect(heart_rate).to_have_text("75", timeout=WAIT_MS)
        expect(tile.locator(f'.vital[data-code="{HEART_RATE}"]')).not_to_have_class(STALE)

        # 15 s of SpO2 at 84 % (the rule: below 90 % for 10 s) raises the high alert.
        start = timezone.now() - dt.timedelta(seconds=16)
        for second in range(15):
            bed_1.post((SPO2, 84, start + dt.timedelta(seconds=second)))
        banner = tile.locator(".alert-banner.prio-high", has_text="SpO2 below 90 %")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_have_class(re.compile(r"\bactive\b"))
        expect(tile.locator(f'.vital[data-code="{SPO2}"] .v-value')).to_have_text("84")
        expect(page.locator("#alert-announcer")).to_contain_text("SpO2", timeout=WAIT_MS)
        page.wait_for_timeout(1500)  # let the sparklines draw (at most 24 per frame)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))

        # Acknowledge: the banner stays, calm, and says who acknowledged it.
        banner.get_by_role("button", name="Acknowledge").click()
        expect(banner).to_have_class(re.compile(r"\backnowledged\b"), timeout=WAIT_MS)
        expect(banner).to_contain_text("acknowledged by nurse.browser")
        expect(banner.get_by_role("button", name="Acknowledge")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "dashboard-acknowledged.png"))

        # The patient page's history names who acknowledged.
        tile.locator("a.patient-name").click()
        page.wait_for_url(f"{portal_url}/patients/{watched.patient.public_id}/")
        acknowledged = page.locator('table.history tr[data-kind="acknowledged"]')
        expect(acknowledged.locator(".by")).to_have_text("nurse.browser")
        expect(page.locator('.chart[data-code="59408-5"] canvas')).to_have_count(1, timeout=WAIT_MS)

        # Losing the ward closes the open dashboard with the reason, instead of freezing it.
        page.goto(dashboard_url)
        expect(page.locator("#connection")).to_have_text("Connected — live", timeout=WAIT_MS)
        _in_thread(lambda: WardAccess.objects.filter(user=nurse, ward=ward).delete())
        overlay = page.get_by_role("alertdialog")
        expect(overlay).to_contain_text("You no longer have access to this ward", timeout=WAIT_MS)
        expect(page.locator("#stale-banner")).to_have_text(
            "DISCONNECTED — values may be out of date"
        )
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "dashboard-failure.png"))
        raise
    finally:
        context.close()


def _refuse_another_wards_clinician(
    browser: Any, portal_url: str, ward: Ward, stranger: User
) -> None:
    """The page is a 404 and the socket closes with 4403, before any ward data is sent."""
    dashboard_url = f"{portal_url}/wards/{ward.code}/"
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{portal_url}/accounts/login/")
        _log_in(page, stranger.username)
        page.wait_for_url(f"{portal_url}/")
        assert page.goto(dashboard_url).status == 404
        close_code = page.evaluate(
            """(url) => new Promise((resolve) => {
                const socket = new WebSocket(url);
                socket.onclose = (event) => resolve(event.code);
                setTimeout(() => resolve(-1), 10000);
            })""",
            f"ws://127.0.0.1:{portal_url.rsplit(':', 1)[1]}/ws/wards/{ward.code}/?protocol=2",
        )
        assert close_code == 4403
    finally:
        context.close()


def test_it_resyncs_a_sequence_gap_and_never_shows_a_dropped_connection_as_live(
    portal_url: str,
) -> None:
    """The client's side of the protocol, against a scripted socket (Playwright stands in for
    the server): duplicates ignored, a gap still open after 2 s → reconnect with the last
    contiguous seq, a lost connection → everything stale-styled under DISCONNECTED and a
    reconnect with backoff, 4401 → the reason on screen and no more reconnecting."""
    ward = factories.ward(code="scripted-ward")
    admission = factories.admitted_patient(factories.bed(ward, "Bed 01"), family_name="Cole")
    nurse = factories.clinician(ward, username="nurse.scripted")
    bed, patient = str(admission.bed.public_id), str(admission.patient.public_id)

    def snapshot(seq: int, heart_rate: float) -> str:
        now = timezone.now()
        return json.dumps(
            {
                "type": "snapshot",
                "seq": seq,
                "server_time": now.isoformat(),
                "ward": {"code": ward.code, "name": ward.name, "escalation_seconds": 60},
                "vitals": {
                    HEART_RATE: {
                        "short_name": "HR",
                        "name": "Heart rate",
                        "unit": "/min",
                        "decimals": 0,
                    },
                },
                "stale_after_seconds": 30,
                "beds": [
                    {
                        "bed": bed,
                        "label": "Bed 01",
                        "patient": {"id": patient, "name": "COLE, Ann", "mrn": "M1"},
                        "vitals": {
                            HEART_RATE: {
                                "value": heart_rate,
                                "unit": "/min",
                                "observed_at": now.isoformat(),
                                "artifact": False,
                            }
                        },
                        "sparklines": {},
                        "news2": None,
                        "alerts": [],
                        "devices": [{"serial": "S1", "last_seen_at": now.isoformat()}],
                    }
                ],
            }
        )

    def vitals(seq: int, heart_rate: float, *, artifact: bool = False) -> str:
        taken_ms = int(timezone.now().timestamp() * 1000)
        entry: dict[str, Any] = {
            "bed": bed,
            "patient": patient,
            "vitals": {HEART_RATE: [heart_rate, taken_ms]},
        }
        if artifact:
            entry["artifact"] = [HEART_RATE]
        return json.dumps({"type": "vitals", "seq": seq, "ward": ward.code, "beds": [entry]})

    with _chromium() as browser:
        from playwright.sync_api import expect

        context = browser.new_context()
        page = context.new_page()
        sockets: list[Any] = []
        page.route_web_socket(f"**/ws/wards/{ward.code}/**", lambda socket: sockets.append(socket))
        page.goto(f"{portal_url}/wards/{ward.code}/")
        _log_in(page, nurse.username)
        page.wait_for_url(f"{portal_url}/wards/{ward.code}/")
        heart_rate = page.locator(f'.vital[data-code="{HEART_RATE}"]')
        expect(page.locator("#stale-banner")).to_have_text("CONNECTING — no live values yet")

        def connected(count: int) -> Any:
            deadline = time.monotonic() + WAIT_MS / 1000
            while len(sockets) < count and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            assert len(sockets) == count, f"expected connection {count}, saw {len(sockets)}"
            return sockets[-1]

        first = connected(1)
        assert "last_seq" not in first.url
        first.send(snapshot(10, 70))
        expect(page.locator("#connection")).to_have_text("Connected — live")
        expect(page.locator("#stale-banner")).to_be_hidden()
        first.send(vitals(11, 71))
        first.send(vitals(11, 99))  # a duplicate: ignored
        expect(heart_rate.locator(".v-value")).to_have_text("71")
        page.wait_for_timeout(300)
        expect(heart_rate.locator(".v-value")).to_have_text("71")

        first.send(vitals(13, 73))  # 12 is missing: applied now, the gap remembered
        expect(heart_rate.locator(".v-value")).to_have_text("73")
        second = connected(2)  # 2 s later: back with the last contiguous seq
        assert second.url.endswith("?protocol=2&last_seq=11"), second.url
        second.send(
            json.dumps(
                {
                    "type": "replay",
                    "from_seq": 12,
                    "events": [json.loads(vitals(12, 72)), json.loads(vitals(13, 73))],
                }
            )
        )
        expect(page.locator("#connection")).to_have_text("Connected — live")
        second.send(vitals(14, 140, artifact=True))
        expect(heart_rate.locator(".v-value")).to_have_text("140")
        expect(heart_rate).to_have_class(re.compile(r"\bartifact\b"))
        second.send(vitals(15, 74))
        expect(heart_rate.locator(".v-value")).to_have_text("74")
        expect(heart_rate).not_to_have_class(re.compile(r"\bartifact\b"))

        second.close(code=1011, reason="server restart")
        expect(page.locator("#stale-banner")).to_have_text(
            "DISCONNECTED — values may be out of date"
        )
        expect(page.locator("#connection")).to_contain_text("reconnecting in")
        expect(page.locator("#dashboard")).to_have_class(re.compile(r"\bnot-live\b"))
        third = connected(3)
        assert third.url.endswith("?protocol=2&last_seq=15"), third.url
        third.send(snapshot(20, 80))
        expect(heart_rate.locator(".v-value")).to_have_text("80")
        expect(page.locator("#stale-banner")).to_be_hidden()

        third.close(code=4401, reason="session ended")
        expect(page.get_by_role("alertdialog")).to_contain_text("Session ended — log in again")
        page.wait_for_timeout(2500)
        assert len(sockets) == 3, "a refused dashboard must not reconnect"

        # The portal was updated under an open page (close 4426): it reloads itself once...
        page.reload()
        fourth = connected(4)
        fourth.send(snapshot(30, 81))
        expect(heart_rate.locator(".v-value")).to_have_text("81")
        fourth.close(code=4426, reason="outdated")
        fifth = connected(5)
        assert "protocol=2" in fifth.url and "last_seq" not in fifth.url, fifth.url
        fifth.send(snapshot(40, 82))
        expect(heart_rate.locator(".v-value")).to_have_text("82")
        # ... and says so, rather than reloading in a loop, when a reload did not help.
        fifth.close(code=4426, reason="outdated")
        expect(page.get_by_role("alertdialog")).to_contain_text("This page is out of date")
        page.wait_for_timeout(2500)
        assert len(sockets) == 5
        context.close()
