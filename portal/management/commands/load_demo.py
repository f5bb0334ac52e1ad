"""Load the demo hospital (DEMO ONLY; refused in production mode). Safe to rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.demo import (
    ADMINISTRATOR,
    DEFAULT_PATH,
    DemoDataInvalid,
    DemoLoadRefused,
    demo_device_token,
    demo_hospital_load,
)


class Command(BaseCommand):
    help = (
        "Create or correct the demo hospital (wards, beds, patients, devices, demo logins). "
        "Idempotent. DEMO ONLY: refused when PORTAL_MODE=production."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--path", type=Path, default=DEFAULT_PATH, help=f"Demo file (default: {DEFAULT_PATH})"
        )

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        try:
            summary = demo_hospital_load(path=Path(path))
        except (DemoLoadRefused, DemoDataInvalid) as error:
            raise CommandError(str(error)) from error

        self.stdout.write(
            self.style.SUCCESS(
                f"Demo hospital loaded: {summary.wards} wards, {summary.beds} beds, "
                f"{summary.patients} patients, {summary.devices} devices, {summary.users} users."
            )
        )
        self.stdout.write(
            f"This run: {summary.created} rows created, {summary.updated} corrected, "
            f"{summary.admissions_created} admissions opened, "
            f"{summary.tokens_issued} device tokens issued, "
            f"{summary.passwords_reset} demo passwords reset, "
            f"{summary.staff_observations} staff observations (on air, alert) recorded."
        )
        for note in summary.admissions_left_alone:
            self.stdout.write(self.style.WARNING(f"Left as found: {note}"))
        self.stdout.write(
            self.style.WARNING(
                "Demo logins (DEMO ONLY: public passwords, never use them anywhere real):"
            )
        )
        name_width = max((len(login.username) for login in summary.logins), default=0)
        password_width = max((len(login.password) for login in summary.logins), default=0)
        for login in summary.logins:
            scope = "all wards" if login.role == ADMINISTRATOR else ", ".join(login.wards)
            self.stdout.write(
                f"  {login.username:<{name_width}}  {login.password:<{password_width}}"
                f"  ({login.role}: {scope})"
            )
        self.stdout.write(
            f"Demo device tokens (DEMO ONLY): {demo_device_token('')}<serial in lower case>, "
            f"e.g. {demo_device_token('DEMO-AMU-01')}."
        )
