"""The portal app holds no models of its own: it renders what the other apps own."""

from __future__ import annotations
