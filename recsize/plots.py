"""Figures that read well: which texts of a matplotlib figure run into each other. Explained in the
preface (Chapter 0), where the book's figures are checked.

``overlapping_texts(fig)`` draws the figure once and compares the extents, in display pixels, of every
text that was drawn: tick labels (major and minor, only those of ticks inside the view), axis labels and
offset texts, titles, suptitles, texts and annotations, legend entries and titles. Two texts run into
each other when their boxes overlap, stand side by side on one line less than ``pad`` points (3, less
than a word space) apart (two subplot titles that close together read as one line), or stand one above
the other less than ``stacked_pad`` (1 pt) apart.

``fail_on_overlapping_texts`` is a matplotlib figure hook (rcParam ``figure.hooks``) that makes every
later draw of a figure raise :class:`OverlappingTexts`; the test suite runs every chapter with it (a
``matplotlibrc`` that names it, through ``$MATPLOTLIBRC``), so a chapter whose figure has overlapping
labels fails at its ``savefig``. ``log_axis`` gives a log-scale axis short labels that do not crowd
(Chapter 1).
"""
from __future__ import annotations

from collections.abc import Iterator

__all__ = ["OverlappingTexts", "describe", "drawn_texts", "fail_on_overlapping_texts", "log_axis",
           "overlapping_texts", "si_label", "text_gap"]


class OverlappingTexts(ValueError):
    """Two or more texts of a figure overlap on the drawn figure. Explained in the preface (Chapter 0)."""


def _axis_texts(axis) -> Iterator:
    yield axis.label
    yield axis.offsetText
    # Only the ticks that are drawn: locators also return ticks just outside the view, whose labels exist
    # (and sit outside the axes) but are never drawn. _update_ticks is what Axis.draw uses to choose them.
    for tick in axis._update_ticks():
        yield tick.label1
        yield tick.label2


def _legend_texts(legend) -> Iterator:
    if legend is not None and legend.get_visible():
        yield legend.get_title()
        yield from legend.get_texts()


def _figure_texts(fig) -> Iterator:
    from matplotlib.text import Text
    yield from fig.texts  # suptitle, supxlabel, supylabel, fig.text
    for legend in fig.legends:
        yield from _legend_texts(legend)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        # titles (centre, left, right), ax.text and ax.annotate
        yield from (a for a in ax.get_children() if isinstance(a, Text))
        if ax.axison:
            for axis in ax._axis_map.values():
                if axis.get_visible():
                    yield from _axis_texts(axis)
        yield from _legend_texts(ax.get_legend())
    for sub in getattr(fig, "subfigs", []):
        yield from _figure_texts(sub)


def drawn_texts(fig, renderer=None) -> list[tuple[object, object]]:
    """Every visible, non-empty text of ``fig`` as drawn, with its extent: a list of ``(Text, Bbox)`` in
    display pixels. Draws the figure first unless a ``renderer`` of a finished draw is given. Explained in
    the preface (Chapter 0)."""
    if renderer is None:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
    out, seen = [], set()
    for text in _figure_texts(fig):
        if id(text) in seen or not text.get_visible() or not text.get_text().strip():
            continue
        seen.add(id(text))
        box = text.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            out.append((text, box))
    return out


def text_gap(box_a, box_b) -> float:
    """The gap between two boxes in pixels: how far apart they are along the direction in which they are
    separated; negative when they overlap (then minus the smaller of the two overlaps). Explained in the
    preface (Chapter 0)."""
    dx = max(box_a.x0, box_b.x0) - min(box_a.x1, box_b.x1)
    dy = max(box_a.y0, box_b.y0) - min(box_a.y1, box_b.y1)
    return max(dx, dy)


def _run_into(box_a, box_b, limit: float, stacked_limit: float) -> bool:
    """Overlapping boxes; boxes side by side on one line (sharing half the height of the smaller) less
    than ``limit`` pixels apart, which read as one run of words; or boxes one above the other (sharing
    half the width of the narrower) less than ``stacked_limit`` pixels apart, which touch (crowded minor
    tick labels of a log axis). Texts set with line spacing (legend rows, an axis label under its tick
    labels) stand further apart, and two texts that meet at a corner (the first x and y tick labels of an
    axes) count only when they overlap."""
    across = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)  # overlap of the two x ranges
    down = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
    if across > 0 and down > 0:
        return True
    if down >= 0.5 * min(box_a.height, box_b.height):
        return -across < limit
    return across >= 0.5 * min(box_a.width, box_b.width) and -down < stacked_limit


def overlapping_texts(fig, pad: float = 3.0, stacked_pad: float = 1.0,
                      renderer=None) -> list[tuple[object, object]]:
    """The pairs of texts of ``fig`` that overlap or run into each other (side by side on one line and less
    than ``pad`` points apart: 3 pt, 4 pixels at 100 dpi, less than a word space; one above the other and
    less than ``stacked_pad``, 1 pt, apart), among tick labels, axis labels, titles, suptitles, annotations
    and legend texts. An empty list when every label stands apart. Explained in the preface (Chapter 0)."""
    boxes = drawn_texts(fig, renderer)
    limit, stacked_limit = pad * fig.dpi / 72, stacked_pad * fig.dpi / 72
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if _run_into(box_a, box_b, limit, stacked_limit)]


def si_label(value: float) -> str:
    """A short label for a count: 500, 20k, 1.5M, 2G. Explained in Chapter 1."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def log_axis(axis, label=si_label) -> None:
    """Make a log-scale ``axis`` (``ax.xaxis``, after plotting) readable: labelled ticks at 1, 2 and 5 times
    a power of ten when the data spans at most two and a half decades, at powers of ten otherwise, written
    short (``si_label``: 20k, 5M); the minor ticks stay, unlabelled. matplotlib's default labels every
    minor tick of a log axis that spans about one decade (2x10^4 3x10^4 4x10^4 ...), and those labels run
    into each other. Explained in Chapter 1."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    if axis is axis.axes.xaxis:
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    lo, hi = sorted(abs(v) for v in axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 else math.inf
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(NullFormatter())


def _role(text) -> str:
    """Where a text sits, in words: 'x tick label of axes 2 ("Recall@20")', 'suptitle', ..."""
    fig = text.get_figure(root=True) if hasattr(text, "get_figure") else text.figure
    for n, ax in enumerate(fig.axes, 1):
        name = f"axes {n}" + (f' ("{ax.get_title()}")' if ax.get_title() else "")
        if text in (ax.title, ax._left_title, ax._right_title):
            return f"title of axes {n}"
        for key, axis in ax._axis_map.items():
            if text is axis.label:
                return f"{key} label of {name}"
            if text is axis.offsetText:
                return f"{key} offset text of {name}"
            if any(text in (t.label1, t.label2) for t in axis.get_major_ticks()):
                return f"{key} tick label of {name}"
            if any(text in (t.label1, t.label2) for t in axis.get_minor_ticks()):
                return f"{key} minor tick label of {name}"
        legend = ax.get_legend()
        if legend is not None and (text is legend.get_title() or text in legend.get_texts()):
            return f"legend of {name}"
        if text in ax.texts:
            return f"text in {name}"
    if text is getattr(fig, "_suptitle", None):
        return "suptitle"
    return "figure text"


def describe(pairs) -> str:
    """One line per overlapping pair: both texts and where they sit. Explained in the preface
    (Chapter 0)."""
    return "\n".join(f"{a.get_text()!r} ({_role(a)}) overlaps {b.get_text()!r} ({_role(b)})"
                     for a, b in pairs)


def _check_draw(event) -> None:
    pairs = overlapping_texts(event.canvas.figure, renderer=event.renderer)
    if pairs:
        raise OverlappingTexts(f"{len(pairs)} pair(s) of overlapping texts in the figure:\n"
                               + describe(pairs))


def fail_on_overlapping_texts(fig) -> None:
    """A matplotlib figure hook: every draw of ``fig`` (``savefig``, display) raises
    :class:`OverlappingTexts` when two of its texts overlap. Enable it for all figures with the rcParam
    ``figure.hooks: recsize.plots:fail_on_overlapping_texts`` (a ``matplotlibrc`` file, or
    ``matplotlib.rc_context``). Explained in the preface (Chapter 0)."""
    fig.canvas.mpl_connect("draw_event", _check_draw)
