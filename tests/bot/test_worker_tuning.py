"""The worker's tuning knobs come from the environment, with production defaults."""

from __future__ import annotations

import pytest

from bot.cli import WorkerTuning
from bot.config.settings import SettingsError


def test_defaults_suit_production() -> None:
    assert WorkerTuning.from_env({}) == WorkerTuning(
        lock_ttl=30.0, reclaim_idle=30.0, max_deliveries=5
    )


def test_durations_and_counts_are_read() -> None:
    tuning = WorkerTuning.from_env(
        {"SHIPMATE_LOCK_TTL": "500ms", "SHIPMATE_RECLAIM_IDLE": "2", "SHIPMATE_MAX_DELIVERIES": "3"}
    )
    assert tuning == WorkerTuning(lock_ttl=0.5, reclaim_idle=2.0, max_deliveries=3)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SHIPMATE_LOCK_TTL", "soon", "SHIPMATE_LOCK_TTL: invalid duration 'soon'"),
        ("SHIPMATE_RECLAIM_IDLE", "0", "SHIPMATE_RECLAIM_IDLE must be positive"),
        ("SHIPMATE_MAX_DELIVERIES", "0", "SHIPMATE_MAX_DELIVERIES must be a whole number >= 1"),
        ("SHIPMATE_MAX_DELIVERIES", "many", "SHIPMATE_MAX_DELIVERIES must be a whole number >= 1"),
    ],
)
def test_bad_values_are_named(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        WorkerTuning.from_env({name: value})
