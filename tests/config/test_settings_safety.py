"""Production mode refuses to start with an unsafe configuration.

Each case imports the settings in a fresh interpreter, exactly as daphne or Celery would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import python_code_run

SAFE = {
    "PORTAL_MODE": "production",
    "DEBUG": "false",
    "SECRET_KEY": "k" * 20 + "-a-long-random-production-secret-for-the-test-only",
    "ALLOWED_HOSTS": "portal.hospital.example",
    "DATABASE_URL": "mysql://portal:secret@db.hospital.example:3306/portal",
    "REDIS_URL": "redis://redis.hospital.example:6379/0",
}


def _start(**overrides: str | None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SAFE and k != "SECRET_KEY_FILE"}
    environment.update(SAFE)
    for key, value in overrides.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    environment["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return python_code_run(
        "import django; django.setup(); print('started')", environment=environment
    )


def test_it_starts_with_a_safe_production_configuration() -> None:
    result = _start()
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"DEBUG": "true"}, "DEBUG must be off"),
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        (
            {"SECRET_KEY": "development-only-secret-key-never-use-in-production-0123456789"},
            "SECRET_KEY",
        ),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:////tmp/portal.sqlite3"}, "DATABASE_URL"),
        ({"REDIS_URL": None}, "REDIS_URL"),
    ],
)
def test_it_refuses_to_start_in_production_with_an_unsafe_setting(
    overrides: dict[str, str | None], complaint: str
) -> None:
    result = _start(**overrides)
    assert result.returncode != 0
    assert "Refusing to start in production mode" in result.stderr
    assert complaint in result.stderr


def test_it_is_production_when_no_mode_is_given() -> None:
    """A forgotten PORTAL_MODE fails safe: production rules apply."""
    result = _start(PORTAL_MODE=None, DEBUG="true")
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_it_reads_the_secret_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text("f" * 64 + "\n", encoding="utf-8")
    result = _start(SECRET_KEY=None, SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr


def test_it_runs_the_embedded_demo_without_any_server() -> None:
    """Development mode without DATABASE_URL/REDIS_URL: SQLite, in-memory layer, eager Celery."""
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], "
        "s.CELERY_TASK_ALWAYS_EAGER)"
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in SAFE and k not in {"SECRET_KEY_FILE", "CELERY_BROKER_URL"}
    }
    environment |= {"PORTAL_MODE": "development", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = python_code_run(code, environment=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "True",
    ]
