"""lab.sampler: failures and gaps are counted as they happen, at the asked rate, and it stops."""

from __future__ import annotations

import itertools
import time

import pytest

from lab.sampler import ProbeFailed, Sample, Sampler, longest_gap, most_unready


def test_a_healthy_target_is_sampled_at_the_rate_with_no_failure():
    with Sampler({"a": lambda: None, "b": lambda: None}, interval=0.05) as s:
        time.sleep(0.5)
    r = s.report()
    assert r.failures == []
    assert 5 <= r.per_target["a"] <= 13 and 5 <= r.per_target["b"] <= 13, r.per_target
    assert r.longest_gap_s < 0.45, r.summary()


def test_failures_are_recorded_with_their_reason_and_the_gap_spans_them():
    calls = itertools.count()

    def flaky():
        n = next(calls)
        if 3 <= n < 8:
            raise ProbeFailed(f"bad answer {n}")

    with Sampler({"m": flaky}, interval=0.05) as s:
        time.sleep(0.7)
    r = s.report()
    assert [f.reason for f in r.failures] == [f"ProbeFailed: bad answer {n}" for n in range(3, 8)]
    assert all(f.target == "m" for f in r.failures)
    assert 0.25 <= r.longest_gap_s < 1.5, r.summary()
    assert "5 failures" in r.summary()


def test_a_target_that_fails_to_the_end_counts_its_gap_to_the_end():
    def down():
        raise OSError("connection refused")

    with Sampler({"m": down}, interval=0.05) as s:
        time.sleep(0.3)
    r = s.report()
    assert r.failures and r.longest_gap_s >= 0.3


def test_it_stops_by_itself_after_max_duration_and_says_so_as_a_failure():
    s = Sampler({"m": lambda: None}, interval=0.02, max_duration=0.2)
    s.start()
    time.sleep(0.5)
    n = s.report().samples
    time.sleep(0.2)
    assert s.report().samples == n
    r = s.stop()
    assert [f.reason for f in r.failures] == ["not sampled after max_duration=0.2s"]


def test_no_probe_is_an_error():
    with pytest.raises(ValueError):
        Sampler({})


def test_in_turn_probes_the_targets_one_after_the_other_and_any_ok_answer_closes_a_gap():
    seen: list[str] = []

    def probe(t: str):
        seen.append(t)
        return t != "down"  # False: a failed sample

    with Sampler({t: (lambda t=t: probe(t)) for t in ("a", "down", "c")}, interval=0.05, in_turn=True) as s:
        time.sleep(0.45)
    r = s.report()
    assert seen[:6] == ["a", "down", "c", "a", "down", "c"]
    assert {f.target for f in r.failures} == {"down"} and r.failures[0].reason == "probe returned False"
    assert r.longest_gap_s < 0.45, r.summary()


def test_longest_gap_and_most_unready_from_samples():
    ok = [Sample(t, t + 0.01, True, "m") for t in (1.0, 2.0, 5.0)]
    assert longest_gap(ok, 0.0, 6.0) == pytest.approx(3.0)  # 2.01 -> 5.01
    down = {"m1": [Sample(1, 1, False, "m1"), Sample(3, 3, True, "m1")],
            "m2": [Sample(2, 2, False, "m2"), Sample(4, 4, True, "m2")],
            "m3": [Sample(1, 1, True, "m3")]}
    assert most_unready(down) == (2, 2)
