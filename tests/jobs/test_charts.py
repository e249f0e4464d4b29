"""The throughput chart is drawn once per set of samples, however many pages ask for it."""

from __future__ import annotations

from jobs import charts


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
