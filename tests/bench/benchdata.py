"""The generated input and the bare-loop yardstick shared by bench_engine and bench_sqlite."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

TEMPLATE = "{name} <{email}> from {city} scored {score}"
COLUMNS = ["id", "name", "email", "city", "score", "comment"]


def make_csv(path: Path, rows: int) -> None:
    rng = random.Random(8)
    cities = ["Zürich", "Lyon", "Oslo", "São Paulo", "Kraków", "Nairobi", "Kyoto", "Lima"]
    words = "fast slow great fine late early broken perfect cheap dear".split()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i in range(rows):
            comment = " ".join(rng.choice(words) for _ in range(4))
            if i % 9 == 0:
                comment = f'said "{comment}, thanks"'
            writer.writerow(
                [
                    i + 1,
                    f"Customer {i}",
                    f"user{i}@example.com",
                    cities[i % 8],
                    f"{rng.random() * 100:.2f}",
                    comment,
                ]
            )


def bare_loop(path: Path, out: Path) -> float:
    start = time.perf_counter()
    with (
        path.open(newline="", encoding="utf-8") as src,
        out.open("w", newline="", encoding="utf-8") as dst,
    ):
        reader = csv.reader(src)
        writer = csv.writer(dst)
        header = next(reader)
        writer.writerow([*header, "text"])
        fmt = TEMPLATE.format_map
        for row in reader:
            # make_csv writes every row with all the header's fields.
            writer.writerow([*row, fmt(dict(zip(header, row, strict=True)))])
    return time.perf_counter() - start
