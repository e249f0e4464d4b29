"""The goals of a `make bench` run, one line each: met, missed, or not judged.

Every benchmark prints JSON lines with `bench`, `value`, `ratio` and a `goal` written for a reader
("ratio >= 0.5", "p99 < 15 ms and ratio < 1.2", "< 50 MB"). This reads them back (files named on
the command line, or standard input) and judges each goal clause it can parse, so a run ends with
the verdicts in one place instead of scattered through minutes of output.
"""

from __future__ import annotations

import json
import operator
import re
import sys
from collections.abc import Iterable

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# "[subject] op number [unit]": the subject is `ratio`, "each process" (the largest one), else the
# line's value (p50, p99, value or nothing). The number may group its thousands ("50,000").
_CLAUSE = re.compile(r"^(?P<subject>.*?)\s*(?P<op><=|>=|<|>)\s*(?P<number>[\d.,]+)\s*\S*$")
# A goal may explain itself in parentheses after its clauses: "< 200 ms (the longest …)".
_REASON = re.compile(r"\s*\(.*\)\s*$")
# A clause may hold for one setting only: "ratio >= 0.9 at C = 32" judges the line whose
# `concurrency` is 32 and leaves the others alone.
_SETTING = re.compile(r"^(?P<clause>.*?)\s+at\s+(?P<name>\w+)\s*=\s*(?P<value>[\d.]+)$")
_SETTING_KEYS = {"C": "concurrency"}


def verdict(line: dict) -> tuple[str, list[str]]:
    """("met" | "missed" | "not judged", the clauses as judged) for one benchmark line."""
    goal = _REASON.sub("", str(line.get("goal") or ""))
    clauses = [c.strip() for c in goal.split(" and ") if c.strip()]
    judged: list[str] = []
    results: list[bool] = []
    for clause in clauses:
        setting = _SETTING.match(clause)
        if setting:
            key = _SETTING_KEYS.get(setting["name"], setting["name"])
            if str(line.get(key)) != setting["value"]:
                continue  # the goal is for another setting than this line's
            clause = setting["clause"]
        match = _CLAUSE.match(clause)
        if not match:
            continue
        subject = match["subject"].strip().lower()
        if subject in ("p50", "p99") and subject not in str(line["bench"]):
            continue  # a p50 line carries its p99 sibling's goal
        key = {"ratio": "ratio", "each process": "largest_process_mb"}.get(subject, "value")
        actual = line.get(key)
        if actual is None:
            continue
        ok = _OPS[match["op"]](float(actual), float(match["number"].replace(",", "")))
        results.append(ok)
        judged.append(f"{key} {actual} {match['op']} {match['number']}: {'yes' if ok else 'no'}")
    if not results:
        return "not judged", judged
    return ("met" if all(results) else "missed"), judged


def lines(sources: Iterable[str]) -> Iterable[dict]:
    for text in sources:
        text = text.strip()
        if not text.startswith("{"):
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and "bench" in line and line.get("goal"):
            yield line


def main(argv: list[str]) -> int:
    sources: Iterable[str]
    if argv:
        sources = (text for path in argv for text in open(path, encoding="utf-8"))
    else:
        sources = sys.stdin
    counts = {"met": 0, "missed": 0, "not judged": 0}
    print("== goals")
    for line in lines(sources):
        outcome, judged = verdict(line)
        counts[outcome] += 1
        if outcome == "not judged":
            continue
        print(f"{outcome:<7} {line['bench']}: goal {line['goal']} ({'; '.join(judged)})")
    print(f"== {counts['met']} met, {counts['missed']} missed, {counts['not judged']} not judged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
