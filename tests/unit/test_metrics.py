from __future__ import annotations

from conveyor.metrics import Metrics, render


def test_counters_by_labels() -> None:
    m = Metrics()
    m.inc("conveyor_jobs_finished_total", outcome="completed")
    m.inc("conveyor_jobs_finished_total", 2, outcome="completed")
    m.inc("conveyor_jobs_finished_total", outcome="failed")
    assert m.value("conveyor_jobs_finished_total", outcome="completed") == 3
    assert m.value("conveyor_jobs_finished_total", outcome="retry") == 0


def test_prometheus_text() -> None:
    text = render([
        ("conveyor_jobs_finished_total", (("outcome", "completed"),), 3),
        ("conveyor_jobs_finished_total", (("outcome", "failed"),), 1),
        ("conveyor_executors", (), 32),
    ])
    assert text.splitlines() == [
        "# HELP conveyor_jobs_finished_total Attempts ended on this node, by outcome.",
        "# TYPE conveyor_jobs_finished_total counter",
        'conveyor_jobs_finished_total{outcome="completed"} 3',
        'conveyor_jobs_finished_total{outcome="failed"} 1',
        "# HELP conveyor_executors Size of the executor pool.",
        "# TYPE conveyor_executors gauge",
        "conveyor_executors 32",
    ]
