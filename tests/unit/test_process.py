"""The node's process settings."""

from __future__ import annotations

import gc

from conveyor.process import GC_THRESHOLDS, tune_collector


def test_the_collector_is_tuned_for_serving_once_start_up_is_done() -> None:
    """Start-up's objects leave the collector's generations, and the young generations are
    collected less often than CPython's defaults (700, 10, 10): see tune_collector."""
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        assert gc.get_freeze_count() == 0
        tune_collector()
        assert gc.get_freeze_count() > 0  # start-up's objects (this test's modules, here)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700 and GC_THRESHOLDS[1] >= 10 and GC_THRESHOLDS[2] >= 10
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
