"""recsize.plots: the texts of a figure that overlap, the labels its data covers, and the figure hook that
fails a chapter on them."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from recsize.plots import (  # noqa: E402
    Covered,
    OverlappingTexts,
    covered_texts,
    describe,
    drawn_texts,
    fail_on_overlapping_texts,
    log_axis,
    overlapping_texts,
    si_label,
    text_gap,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(pairs) -> set[frozenset[str]]:
    return {frozenset((a.get_text(), b.get_text())) for a, b in pairs}


def test_a_plain_figure_has_no_overlaps():
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax in axes:
        ax.plot([1, 2, 3], [3, 1, 2], label="a line")
        ax.set(xlabel="x", ylabel="y", title="short")
        ax.legend()
    fig.suptitle("two panels")
    fig.tight_layout()
    assert overlapping_texts(fig) == []


def test_subplot_titles_that_run_into_each_other():
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].set_title("a long title for the left panel that will not fit")
    axes[1].set_title("and another long one on the right panel")
    titles = (axes[0].title, axes[1].title)
    pairs = [(a, b) for a, b in overlapping_texts(fig) if a in titles and b in titles]
    assert _texts(pairs) == {frozenset((axes[0].get_title(), axes[1].get_title()))}
    text = describe(pairs)
    assert "title of axes 1" in text and "title of axes 2" in text, text
    axes[1].set_title("short")
    assert all(axes[1].title not in pair for pair in overlapping_texts(fig))


def test_text_gap():
    a = Bbox.from_extents(0, 0, 10, 10)
    assert text_gap(a, Bbox.from_extents(13, 2, 20, 8)) == 3  # side by side, 3 px apart
    assert text_gap(a, Bbox.from_extents(2, 14, 8, 20)) == 4  # one above the other
    assert text_gap(a, Bbox.from_extents(8, 5, 20, 20)) == -2  # overlap of 2 px across, 5 px down
    assert text_gap(a, Bbox.from_extents(15, 12, 20, 20)) == 5  # diagonal: the larger gap


def test_texts_that_touch_run_into_each_other():
    """Two titles whose boxes touch (Chapter 7 once) read as one line: closer than 3 pt is an overlap."""
    fig = plt.figure(figsize=(6, 2), dpi=100)
    left = fig.text(0.1, 0.5, "coloured by cluster")
    fig.canvas.draw()
    x1 = left.get_window_extent().x1
    touching = fig.text((x1 + 3) / fig.bbox.width, 0.5, "gate patterns")  # 3 px: as one line
    assert _texts(overlapping_texts(fig)) == {frozenset(("coloured by cluster", "gate patterns"))}
    touching.set_x((x1 + 6) / fig.bbox.width)  # 6 px apart (4.3 pt): a word space, readable
    assert overlapping_texts(fig) == []


def test_crowded_log_scale_minor_tick_labels():
    """A log axis spanning less than a decade labels its minor ticks (2x10^4, 3x10^4, ...); in a narrow
    panel they run into each other."""
    fig, ax = plt.subplots(figsize=(2.0, 2.0))
    ax.semilogx([1.2e4, 9e4], [0, 1])
    pairs = overlapping_texts(fig)
    assert pairs, "the crowded minor tick labels were not found"
    assert "minor tick label" in describe(pairs)
    # the same data in a wide panel reads fine
    fig2, ax2 = plt.subplots(figsize=(9, 3))
    ax2.semilogx([1.2e4, 9e4], [0, 1])
    assert overlapping_texts(fig2) == []


def test_legend_text_over_an_annotation():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], label="the data line")
    ax.legend(loc="upper left")
    fig.canvas.draw()
    legend_box = ax.get_legend().get_texts()[0].get_window_extent()
    x, y = ax.transData.inverted().transform((legend_box.x0 + 2, legend_box.y0 + 2))
    ax.text(x, y, "a note under the legend")
    assert _texts(overlapping_texts(fig)) == {frozenset(("the data line", "a note under the legend"))}


def test_only_drawn_tick_labels_count():
    """Locators return ticks just outside the view; their labels are never drawn and must not count."""
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0.05, 0.95], [0.05, 0.95])
    ax.set_xlim(0.05, 0.95)
    labels = {t.get_text() for t, _ in drawn_texts(fig)}
    assert "0.0" not in labels and "1.0" not in labels, labels
    assert {"0.2", "0.4", "0.6", "0.8"} <= labels, labels
    # hidden and empty texts do not count either
    ax.set_title("")
    ax.text(0.5, 0.5, "hidden", visible=False)
    assert "hidden" not in {t.get_text() for t, _ in drawn_texts(fig)}


def test_the_figure_hook_fails_savefig_on_overlaps_only():
    with matplotlib.rc_context({"figure.hooks": ["recsize.plots:fail_on_overlapping_texts"]}):
        good, ax = plt.subplots(figsize=(5, 3))
        ax.plot(np.arange(5), np.arange(5))
        ax.set_title("fine")
        good.savefig(io.BytesIO(), format="png")  # no overlap: no error
        bad, axes = plt.subplots(1, 2, figsize=(8, 3))
        axes[0].set_title("a long title for the left panel that will not fit, not at all")
        axes[1].set_title("and another long one on the right panel, also too long")
        with pytest.raises(OverlappingTexts, match="title of axes 1.*overlaps.*title of axes 2"):
            bad.savefig(io.BytesIO(), format="png")


def test_the_hook_can_be_installed_by_hand():
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    fail_on_overlapping_texts(fig)
    axes[0].set_ylabel("y")
    fig.savefig(io.BytesIO(), format="png")
    axes[0].set_title("a long title for the left panel that will not fit, not at all")
    axes[1].set_title("and another long one on the right panel, also too long")
    with pytest.raises(OverlappingTexts):
        fig.canvas.draw()


def test_si_label():
    assert [si_label(v) for v in (500, 2000, 20_000, 1_500_000, 2e9, 0.05)] == \
        ["500", "2k", "20k", "1.5M", "2G", "0.05"]


@pytest.mark.parametrize(("lo", "hi"), [(1.2e4, 9e4), (6e3, 6e4), (2e3, 5e5), (10, 1e9)])
def test_log_axis_labels_do_not_crowd(lo, hi):
    """The Chapter 1 figure: parameters from one to many decades on a 4.5 inch wide log axis."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([lo, hi], [0, 1], "o-")
    log_axis(ax.xaxis)
    assert overlapping_texts(fig) == [], describe(overlapping_texts(fig))
    labels = [t.get_text() for t, _ in drawn_texts(fig) if t in ax.xaxis.get_majorticklabels()]
    assert len(labels) >= 2, f"a log axis from {lo:g} to {hi:g} needs at least two labels, got {labels}"
    assert not [t for t in ax.xaxis.get_minorticklabels() if t.get_text()], "minor ticks stay unlabelled"


def test_stacked_small_legend_entries_are_not_an_overlap():
    """Legend rows stand half a font size apart: 2.5 pt in a 5 pt legend, and still readable."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for k in range(4):
        ax.plot([0, 1], [k, k + 1], label=f"method {k}, compact")
    ax.legend(fontsize=5)
    fig.tight_layout()
    assert overlapping_texts(fig) == []


def test_stacked_texts_that_touch():
    """Minor tick labels of a log y axis stacked 0.2 px apart (Chapter 2 once): they touch."""
    fig = plt.figure(figsize=(3, 3), dpi=100)
    low = fig.text(0.3, 0.3, "3x10^1")
    fig.canvas.draw()
    top = low.get_window_extent().y1
    high = fig.text(0.3, (top + 0.5) / fig.bbox.height, "4x10^1", va="bottom")
    assert _texts(overlapping_texts(fig)) == {frozenset(("3x10^1", "4x10^1"))}
    high.set_y((top + 4) / fig.bbox.height)  # 4 px (2.9 pt): apart
    assert overlapping_texts(fig) == []


# -- labels the data covers ------------------------------------------------------------------------------

def _covers(fig) -> set[tuple[str, str, str]]:
    """(label text, artist label, how) per label the data covers."""
    return {(c.label.get_text() if hasattr(c.label, "get_text") else "legend", c.artist.get_label(), c.how)
            for c in covered_texts(fig)}


def _data_figure():
    """One dotted line with markers from (0, 0) to (4, 4) and a dashed line without markers at y = 3."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([0, 1, 2, 3, 4], [0, 1, 2, 3, 4], "o:", ms=8, label="ES")
    ax.axhline(3, ls="--", color="k", label="reference")
    ax.set(xlim=(-0.5, 4.5), ylim=(-0.5, 4.5))
    return fig, ax


def test_a_label_under_a_marker_is_covered():
    """The Chapter 8 Pareto plots once: a 'c = 95 %' label at the bottom of the axes under the lowest
    point of a method."""
    fig, ax = _data_figure()
    ax.annotate("c = 95 %", (0, 0), xycoords="data", ha="center", va="center", fontsize=7)
    assert _covers(fig) == {("c = 95 %", "ES", "marker")}
    (hit,) = covered_texts(fig)
    assert isinstance(hit, Covered) and hit.at == (0.0, 0.0)
    assert describe([hit]) == "'c = 95 %' (text in axes 1) is covered by a marker of line 'ES' at (0, 0)"


def test_a_marker_counts_at_its_drawn_size():
    """A marker covers what its outline, at its size in points, reaches: a label 10 px from the centre
    of a point is under a 20 pt marker (13.9 px across at 100 dpi... and a half edge), clear of a 4 pt one."""
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    (line,) = ax.plot([0.5], [0.5], "s", ms=20, label="big")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    fig.canvas.draw()
    x, y = ax.transData.transform((0.5, 0.5))
    ax.text(*ax.transData.inverted().transform((x + 10, y)), "label", va="center")
    assert _covers(fig) == {("label", "big", "marker")}
    line.set_markersize(4)
    assert covered_texts(fig) == []


def test_a_label_crossed_by_a_line():
    fig, ax = _data_figure()
    ax.text(0.8, 3, "on the reference line", ha="center", va="center")
    assert _covers(fig) == {("on the reference line", "reference", "line")}
    assert describe(covered_texts(fig)) == \
        "'on the reference line' (text in axes 1) is crossed by line 'reference'"
    ax.text(1.5, 1.5, "dotted", ha="center", va="center")   # between two markers
    assert ("dotted", "ES", "line") in _covers(fig)


def test_a_label_clear_of_the_data_passes():
    fig, ax = _data_figure()
    ax.text(0.2, 2.5, "clear of the data", ha="center", va="center")
    ax.annotate("an annotation", (2, 2), xytext=(3, 1.2), arrowprops={"arrowstyle": "->"})  # its arrow
    ax.grid(True)                                                                     # crosses no text
    ax.legend(loc="lower right")
    fig.tight_layout()
    assert covered_texts(fig) == []
    assert overlapping_texts(fig) == []


def test_only_the_part_of_a_label_inside_the_axes_counts():
    """The data is clipped to the axes: a label above the axes, where the line would run on, is clear."""
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([0, 10], [0, 10], "o-", label="diagonal")
    ax.set(xlim=(0, 4), ylim=(0, 4))
    label = ax.text(4.4, 4.4, "beyond", ha="center", va="center", clip_on=False)
    assert covered_texts(fig) == []
    label.set_position((3.9, 3.9))   # astride the corner of the axes: its part inside is crossed
    assert _covers(fig) == {("beyond", "diagonal", "line")}


def test_a_line_breaks_at_nan_and_a_step_line_steps():
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot([0, 1, np.nan, 3, 4], [0, 1, np.nan, 3, 4], label="gap")
    ax.text(2, 2, "in the gap", ha="center", va="center")
    ax.set(xlim=(-0.5, 4.5), ylim=(-0.5, 4.5))
    assert covered_texts(fig) == []
    ax.step([0, 2, 4], [0.5, 2, 4], where="post", label="step")   # horizontal at y = 2 from x = 2 to 4
    ax.text(3, 0.5, "under the diagonal", ha="center", va="center")  # the straight segment would cross it
    assert _covers(fig) == {("in the gap", "step", "line")}


def test_scatter_points_at_their_size():
    """The Pareto front's rings: scatter points of 260 pt^2 (16 pt across)."""
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.scatter([1, 3], [1, 3], s=260, facecolors="none", edgecolors="k", label="Pareto front")
    ax.set(xlim=(0, 4), ylim=(0, 4))
    fig.canvas.draw()
    x, y = ax.transData.transform((3, 3))
    label = ax.text(*ax.transData.inverted().transform((x + 8, y)), "ring", va="center")
    assert _covers(fig) == {("ring", "Pareto front", "marker")}
    assert "is covered by a marker of scatter 'Pareto front' at (3, 3)" in describe(covered_texts(fig))
    label.set_position(ax.transData.inverted().transform((x + 14, y)))   # 16 pt = 22 px: radius 11 px, edge
    assert covered_texts(fig) == []                                       # 0.7 px, less the 1 pt inset


def test_a_line_that_grazes_the_box_of_a_text_touches_no_letter():
    """The preface's figure: "one 80 GiB accelerator" sits on its dashed line, 0.3 pt into its box (the
    room for descenders it does not have); 2 pt into the box the line runs through the letters."""
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.axhline(1, ls="--", lw=1, label="80 GiB")   # drawn 0.5 pt either side of y = 1
    ax.set(xlim=(0, 4), ylim=(0, 2))
    label = ax.annotate("one 80 GiB accelerator", (1, 1), xytext=(0, 0.5 - 0.3), textcoords="offset points",
                        va="bottom")
    assert covered_texts(fig) == []
    label.xyann = (0, 0.5 - 2)
    assert _covers(fig) == {("one 80 GiB accelerator", "80 GiB", "line")}


def test_a_legend_over_a_marker():
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([0, 1, 2], [2, 1, 0], "o", label="points")
    ax.plot([0, 2], [1.9, 1.9], label="a line under the legend")
    ax.legend(loc="upper left")
    assert _covers(fig) == {("legend", "points", "marker")}
    assert describe(covered_texts(fig)).startswith("the legend of axes 1 covers a marker of line 'points' at (0, 2)")
    ax.legend(loc="best")   # matplotlib finds the free corner: passes
    assert covered_texts(fig) == []
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))   # outside the axes, as pareto_plot's
    assert covered_texts(fig) == []


def test_the_figure_hook_fails_savefig_on_a_covered_label():
    with matplotlib.rc_context({"figure.hooks": ["recsize.plots:fail_on_overlapping_texts"]}):
        fig, ax = _data_figure()
        label = ax.text(1, 1, "on a point", ha="center", va="center")
        with pytest.raises(OverlappingTexts, match=r"1 label\(s\) the data covers in the figure:\n"
                                                   r"'on a point' \(text in axes 1\) is covered by a marker"):
            fig.savefig(io.BytesIO(), format="png")
        label.set_position((3.2, 0.5))
        fig.savefig(io.BytesIO(), format="png")
