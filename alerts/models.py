"""Alert rules and alerts (the alert engine issue fills this app)."""

from __future__ import annotations
