"""Drive the demo hospital's bedside monitors against the ingestion API (DEMO ONLY)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.models import Device, token_digest
from portal.demo import demo_device_token
from portal.physiology import SCENARIOS, DeviceSpec
from portal.simulator import (
    PlanInvalid,
    Simulation,
    scenario_plan_build,
    simulated_devices_build,
)


def demo_devices_select(*, limit: int | None) -> list[DeviceSpec]:
    """Active devices whose token is still the demo token of their serial, by serial."""
    devices = (
        Device.objects.filter(active=True, token_digest__isnull=False)
        .select_related("bed__ward")
        .order_by("serial")
    )
    specs = [
        DeviceSpec(
            serial=device.serial,
            token=demo_device_token(device.serial),
            bed=f"{device.bed.ward.code}/{device.bed.label}" if device.bed else None,
        )
        for device in devices
        # A device whose token an administrator rotated is no longer the simulator's to drive.
        if device.token_digest == token_digest(demo_device_token(device.serial))
    ]
    return specs[:limit] if limit is not None else specs


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from error
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    return parse


class Command(BaseCommand):
    help = (
        "Simulate the demo hospital's bedside monitors: every active demo device posts heart "
        "rate, SpO2, respiratory rate, blood pressure and temperature to the ingestion API, "
        "with scripted deteriorations on a few beds. DEMO ONLY."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Portal base URL.")
        parser.add_argument(
            "--devices", type=_positive(int), metavar="N", help="Drive only the first N devices."
        )
        parser.add_argument(
            "--interval", type=_positive(float), default=1.0, help="Seconds between messages."
        )
        parser.add_argument(
            "--duration",
            type=_positive(float),
            help="Stop after this many seconds (default: never).",
        )
        parser.add_argument(
            "--seed", type=int, help="Seed of the simulated physiology (default: random, printed)."
        )
        parser.add_argument(
            "--scenario",
            action="append",
            default=[],
            metavar="BED_OR_SERIAL=NAME[@SECONDS]",
            help=(
                "Run a scenario on a device, given by serial (DEMO-AMU-03) or bed (amu/bed03), "
                f"optionally from SECONDS after start. Repeatable. Names: {', '.join(SCENARIOS)}."
            ),
        )
        parser.add_argument(
            "--demo-plan",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Run the default demo plan of staggered scenarios on a few beds (default: on).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the devices and the plan, send nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PORTAL_MODE == "production":
            raise CommandError(
                "Refusing to simulate devices in production mode (PORTAL_MODE=production): "
                "the simulator drives demo devices with public tokens."
            )
        specs = demo_devices_select(limit=options["devices"])
        if not specs:
            raise CommandError(
                "No active demo devices. Load the demo hospital: manage.py load_demo"
            )
        try:
            plan = scenario_plan_build(
                specs=specs, requested=options["scenario"], demo_plan=options["demo_plan"]
            )
        except PlanInvalid as error:
            raise CommandError(str(error)) from error
        seed = options["seed"]
        if seed is None:
            seed = random.SystemRandom().randrange(1_000_000)

        self.stdout.write(
            f"Simulating {len(specs)} demo devices against {options['url']} every "
            f"{options['interval']:g} s (seed {seed}; --seed {seed} replays the same patients)."
        )
        for spec in specs:
            scheduled = plan.get(spec.serial)
            what = (
                f"{scheduled.scenario.name} from +{scheduled.start_after:g} s: "
                f"{scheduled.scenario.description}"
                if scheduled
                else "stable"
            )
            self.stdout.write(f"  {spec.serial:<16} {spec.bed or '(no bed)':<14} {what}")
        if options["dry_run"]:
            return

        # One line per HTTP request would drown the summaries.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        simulation = Simulation(
            devices=simulated_devices_build(
                specs=specs, plan=plan, seed=seed, boot_id=str(uuid.uuid4())
            ),
            url=options["url"],
            interval=options["interval"],
            duration=options["duration"],
            rng=random.Random(f"{seed}/network"),  # noqa: S311 - jitter, not a secret
            report=self.stdout.write,
        )
        try:
            asyncio.run(simulation.run())
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
