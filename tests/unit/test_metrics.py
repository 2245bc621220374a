from __future__ import annotations

from conveyor.metrics import Metrics, render


def test_counters_by_labels() -> None:
    m = Metrics()
    m.inc("conveyor_jobs_finished_total", outcome="completed")
    m.inc("conveyor_jobs_finished_total", 2, outcome="completed")
    m.inc("conveyor_jobs_finished_total", outcome="failed")
    assert m.value("conveyor_jobs_finished_total", outcome="completed") == 3
    assert m.value("conveyor_jobs_finished_total", outcome="retry") == 0


def test_keys_made_once_count_as_inc_does() -> None:
    m = Metrics()
    key = m.key("conveyor_jobs_finished_total", outcome="completed", type="sleep")
    m.add(key)
    m.inc("conveyor_jobs_finished_total", type="sleep", outcome="completed")  # labels in any order
    assert m.value("conveyor_jobs_finished_total", outcome="completed", type="sleep") == 2
    h = m.histogram("conveyor_job_run_seconds", type="sleep")
    h.observe(0.003)
    m.observe("conveyor_job_run_seconds", 0.2, type="sleep")
    assert m.histogram("conveyor_job_run_seconds", type="sleep") is h
    assert (h.count, h.counts[0]) == (2, 1)


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


def test_a_histogram_is_one_family_with_cumulative_buckets() -> None:
    m = Metrics()
    for seconds in (0.003, 0.2, 0.2, 7.0, 1000.0):
        m.observe("conveyor_job_run_seconds", seconds, type="sleep")
    lines = render(m.histogram_samples()).splitlines()
    assert lines[:2] == [
        "# HELP conveyor_job_run_seconds How long attempts ran on this node, by job type (handler start to end).",
        "# TYPE conveyor_job_run_seconds histogram",
    ]
    assert sum(line.startswith("# TYPE") for line in lines) == 1  # _bucket, _sum, _count: one family
    buckets = {line.split('le="')[1].split('"')[0]: int(line.split()[-1]) for line in lines if "_bucket" in line}
    assert (buckets["0.005"], buckets["0.25"], buckets["5"], buckets["10"], buckets["300"], buckets["+Inf"]) == (
        1, 3, 3, 4, 4, 5)
    assert 'conveyor_job_run_seconds_count{type="sleep"} 5' in lines
    assert 'conveyor_job_run_seconds_sum{type="sleep"} 1007.4' in lines
