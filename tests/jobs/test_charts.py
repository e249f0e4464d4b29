"""The job page's drawings: the throughput chart is drawn once per set of samples, however many
pages ask for it; the bar of rows by state puts each state where it belongs."""

from __future__ import annotations

import re
from types import SimpleNamespace

from jobs import charts, progress


def test_the_same_samples_give_the_same_drawing_from_the_cache():
    samples = [[1000.0, 0], [1001.0, 150], [1002.5, 400]]
    first = charts.throughput_svg(samples)
    before = charts._drawn.cache_info()
    again = charts.throughput_svg([list(s) for s in samples])

    assert again == first and "<svg" in first
    assert charts._drawn.cache_info().hits == before.hits + 1
    assert again == charts._draw(samples, title="Throughput")


def test_new_samples_are_drawn_anew():
    samples = [[1000.0, 0], [1001.0, 150]]
    first = charts.throughput_svg(samples)
    later = charts.throughput_svg([*samples, [1002.0, 900]])
    assert later != first


def test_no_samples_is_a_note():
    assert "The chart appears" in charts.throughput_svg([])
    assert "The chart appears" in charts.throughput_svg(None)


def test_the_state_bar_draws_the_segments_with_rows_at_their_place():
    job = SimpleNamespace(
        total=1000, succeeded=250, failed=50, cancelled=0, running=16, pending=684
    )
    svg = str(charts.segbar_svg(progress.segments(job)))
    assert svg.startswith('<svg class="segbar" viewBox="0 0 100 4"')
    rects = re.findall(
        r'<rect class="seg seg-(\w+)" data-segment="\1" data-rows="(\d+)" '
        r'x="([\d.]+)" y="0" width="([\d.]+)" height="4"></rect>',
        svg,
    )
    assert rects == [
        ("succeeded", "250", "0.00", "25.00"),
        ("failed", "50", "25.00", "5.00"),
        ("running", "16", "30.00", "1.60"),
        ("pending", "684", "31.60", "68.40"),
    ]  # no rectangle for the state without rows
    assert 'class="segbar small"' in str(charts.segbar_svg([], small=True))


def test_the_state_bar_escapes_what_it_is_given():
    seg = SimpleNamespace(key='x"><script>', rows=1, offset=0.0, percent=100.0)
    svg = str(charts.segbar_svg([seg]))
    assert "<script>" not in svg and "&quot;&gt;&lt;script&gt;" in svg


def test_a_pause_is_drawn_at_zero_not_as_a_slope_down_to_a_low_rate():
    from jobs.charts import rates

    # 10 rows/s for 5 s, paused 60 s, then 10 rows/s for 5 s.
    before = [[t, 10 * t] for t in range(0, 6)]
    after = [[65 + t, 50 + 10 * t] for t in range(0, 6)]
    points = rates(before + after)
    assert points[5:8] == [(5.0, 10.0), (5.0, 0.0), (65.0, 0.0)]  # the pause, flat at zero
    assert [rate for _t, rate in points[8:]] == [10.0] * 5  # and the rate after it as before
    # Evenly slow rows (one every 15 s) are a slow stretch, not gaps.
    slow = [[15 * i, i] for i in range(6)]
    assert all(rate > 0 for t, rate in rates(slow) if t > 0)
