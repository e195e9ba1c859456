"""report.html's pure parts: the Pareto front and deterministic, self-contained plots."""

from __future__ import annotations

from edgeport.run.html import _figure, _svg, pareto


def test_pareto_keeps_the_points_nothing_beats():
    # (size, SQNR): b is beaten by a (smaller and better); c is bigger but better; d ties c and is bigger.
    points = [(10.0, 30.0), (12.0, 25.0), (20.0, 40.0), (25.0, 40.0)]
    assert pareto(points) == [0, 2]
    assert pareto([(1.0, 1.0)]) == [0]
    assert pareto([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # equal points do not beat each other


def test_plots_are_inline_svg_with_the_same_bytes_every_time():
    def draw() -> str:
        figure, axes = _figure()
        axes.plot([1, 2, 3], [3, 1, 2], label="x")
        axes.legend()
        return _svg(figure)

    first = draw()
    assert first.startswith("<svg") and first == draw()
    assert "<?xml" not in first and "<dc:date>" not in first


def test_a_pruned_variant_gets_its_channels_plot():
    from types import SimpleNamespace

    from edgeport.run.html import channels_plot

    group = SimpleNamespace(module="features.0", channels_before=64, channels_after=40)
    svg = channels_plot("int8_prune0.3", SimpleNamespace(groups=[group]))
    assert svg.startswith("<svg") and "features.0" in svg and "channels per pruned group" in svg
    assert channels_plot("x", SimpleNamespace(groups=[])) is None


def test_the_latency_plot_goes_logarithmic_only_when_runners_differ_by_orders_of_magnitude():
    from edgeport.run.html import latency_plot
    from edgeport.run.report import Row

    apart = [
        Row("float", "cortex-m", latency_ms={"host": (0.05, 0.08), "tflm": (2.6, 3.0)}),
        Row("int8", "cortex-m", latency_ms={"host": (0.04, 0.07), "tflm": (3.6, 3.7)}),
    ]
    close = [
        Row("float", "cortex-m", latency_ms={"host": (0.05, 0.08)}),
        Row("int8", "cortex-m", latency_ms={"host": (0.04, 0.07)}),
    ]
    assert "log scale" in latency_plot(apart, ["host", "tflm"])
    assert "log scale" not in latency_plot(close, ["host"])
