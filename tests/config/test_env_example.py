"""`.env.example` documents every variable the settings read (the README promises it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _variables_read(path: Path) -> set[str]:
    """Names passed as the first argument to ``env.<cast>(...)`` or ``env(...)``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        function = node.func
        if isinstance(function, ast.Attribute):
            function = function.value
        if not (isinstance(function, ast.Name) and function.id == "env"):
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def _variables_documented() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_every_setting_read_from_the_environment_is_in_env_example() -> None:
    read = _variables_read(ROOT / "config" / "settings.py")
    assert {"PORTAL_MODE", "DATABASE_URL", "GC_THRESHOLDS", "METRICS_ALLOWED_NETWORKS"} <= read
    assert sorted(read - _variables_documented()) == []


def test_env_example_documents_no_variable_the_settings_do_not_read() -> None:
    read = _variables_read(ROOT / "config" / "settings.py")
    # The test settings read this one before config/settings.py is imported.
    read |= {"TEST_REDIS_URL"}
    assert sorted(_variables_documented() - read) == []
