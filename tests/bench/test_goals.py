"""`make bench` ends with a verdict for each goal: the judge must read the goals as written."""

from __future__ import annotations

import json

from tests.bench.goals import main, verdict


def test_a_ratio_goal_is_judged_on_the_ratio():
    assert verdict({"bench": "ingest", "value": 9e5, "ratio": 0.22, "goal": "ratio >= 0.5"})[0] == (
        "missed"
    )
    assert verdict({"bench": "ingest", "value": 1.0, "ratio": 0.5, "goal": "ratio >= 0.5"})[0] == (
        "met"
    )


def test_every_clause_must_hold():
    line = {
        "bench": "status_api_p99",
        "value": 16.0,
        "ratio": 1.0,
        "goal": "p99 < 15 ms and ratio < 1.2",
    }
    assert verdict(line)[0] == "missed"
    assert verdict({**line, "value": 14.0})[0] == "met"
    assert verdict({**line, "value": 14.0, "ratio": 1.3})[0] == "missed"


def test_a_p50_line_is_not_judged_by_its_p99_goal():
    line = {
        "bench": "status_api_p50",
        "value": 30.0,
        "ratio": 1.0,
        "goal": "p99 < 15 ms and ratio < 1.2",
    }
    outcome, judged = verdict(line)
    assert outcome == "met" and judged == ["ratio 1.0 < 1.2: yes"]


def test_each_process_is_the_largest_one():
    line = {
        "bench": "rss",
        "value": 300.0,
        "largest_process_mb": 140.0,
        "goal": "each process < 150 MB",
    }
    assert verdict(line)[0] == "met"
    assert verdict({**line, "largest_process_mb": 151.0})[0] == "missed"


def test_a_goal_that_explains_itself_is_judged_on_its_clause():
    line = {
        "bench": "sqlite_write_lock_wait_max",
        "value": 229.5,
        "ratio": None,
        "goal": "< 200 ms (the engine's longest write transaction, as a writer waiting sees it)",
    }
    assert verdict(line) == ("missed", ["value 229.5 < 200: no"])
    assert verdict({**line, "value": 56.5})[0] == "met"
    size = {"bench": "size", "value": 5e4, "ratio": 14.4, "goal": "ratio >= 0.8 (per row)"}
    assert verdict(size) == ("met", ["ratio 14.4 >= 0.8: yes"])


def test_a_number_may_group_its_thousands():
    line = {"bench": "ingest_sqlite", "value": 105853.6, "goal": ">= 50,000 rows/s"}
    assert verdict(line) == ("met", ["value 105853.6 >= 50,000: yes"])
    assert verdict({**line, "value": 49999})[0] == "missed"


def test_a_goal_for_one_setting_judges_only_the_line_at_it():
    goal = "ratio >= 0.9 at C = 32"
    at_32 = {"bench": "http_job_throughput", "ratio": 0.872, "concurrency": 32, "goal": goal}
    assert verdict(at_32) == ("missed", ["ratio 0.872 >= 0.9: no"])
    assert verdict({**at_32, "ratio": 0.91})[0] == "met"
    assert verdict({**at_32, "concurrency": 8})[0] == "not judged"


def test_goals_in_words_are_left_alone(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text(
        "== bench_engine\n"
        + json.dumps({"bench": "a", "value": 1, "goal": "none (a figure to read)"})
        + "\n"
        + json.dumps({"bench": "b", "value": 2, "ratio": 0.9, "goal": "lower"})
        + "\n"
        + json.dumps({"bench": "c", "value": 3, "ratio": 0.9, "goal": "ratio >= 0.75"})
        + "\n"
    )
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "== goals",
        "met     c: goal ratio >= 0.75 (ratio 0.9 >= 0.75: yes)",
        "== 1 met, 0 missed, 2 not judged",
    ]
