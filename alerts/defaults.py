"""The hospital-wide default rules, created by a data migration and editable in the admin.

Sources and choices (see README, "Alert engine"):
- NEWS2 triggers are the RCP's (clinical.md). Priorities: aggregate ≥ 7 (high risk, emergency
  response) → high; aggregate 5–6 (urgent review) → medium; a 3 in a single parameter
  (urgent review by the ward team) → medium, the conservative reading of "low–medium".
- NEWS2 and the SpO2 rule wait for their condition to hold 30 s / 10 s before firing: a
  sustained-condition delay against artifact spikes, which clinical.md names as how a good
  system keeps alarms meaningful. The bedside monitor stays the primary, immediate alarm.
- SpO2 below 90 %, clearing only at 92 % or above, is the product's stated example of
  hysteresis; it is high priority (desaturation needs an immediate response).
- "No data" from an assigned device for 30 s is a technical alarm, medium priority: the
  patient is unmonitored, which needs a prompt response but is not a physiological emergency.
"""

from __future__ import annotations

from typing import Any

DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "NEWS2 aggregate 7 or more",
        "kind": "news2_7",
        "priority": "high",
        "sustain_seconds": 30,
    },
    {
        "name": "NEWS2 aggregate 5–6",
        "kind": "news2_5_6",
        "priority": "medium",
        "sustain_seconds": 30,
    },
    {
        "name": "NEWS2 3 in a single parameter",
        "kind": "news2_single_3",
        "priority": "medium",
        "sustain_seconds": 30,
    },
    {
        "name": "SpO2 below 90 %",
        "kind": "threshold",
        "code": "59408-5",
        "low": 90.0,
        "clear_low": 92.0,
        "priority": "high",
        "sustain_seconds": 10,
    },
    {
        "name": "No data from device",
        "kind": "device_offline",
        "priority": "medium",
        "sustain_seconds": 30,
    },
]


def default_rules_ensure(rule_model: Any) -> int:
    """Create the default rules that are missing (by kind and code, hospital scope); return how
    many. Takes the model so the data migration can pass its historical model."""
    created = 0
    for rule in DEFAULT_RULES:
        identity = {
            "kind": rule["kind"],
            "code": rule.get("code", ""),
            "ward": None,
            "patient": None,
        }
        if not rule_model.objects.filter(**identity).exists():
            rule_model.objects.create(**rule)
            created += 1
    return created
