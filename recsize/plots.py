"""Figures that read well: which texts of a matplotlib figure run into each other, and which labels its
data hides. Explained in the preface (Chapter 0), where the book's figures are checked.

``overlapping_texts(fig)`` draws the figure once and compares the extents, in display pixels, of every
text that was drawn: tick labels (major and minor, only those of ticks inside the view), axis labels and
offset texts, titles, suptitles, texts and annotations, legend entries and titles. Two texts run into
each other when their boxes overlap, stand side by side on one line less than ``pad`` points (3, less
than a word space) apart (two subplot titles that close together read as one line), or stand one above
the other less than ``stacked_pad`` (1 pt) apart.

``covered_texts(fig)`` finds the labels that the data hides: a text drawn inside an axes (``ax.text``,
``ax.annotate``: a data label) that one of the axes' markers covers (a ``plot`` marker or a ``scatter``
point, its outline at its drawn size in pixels, edge included) or one of its lines crosses (a ``plot``
line, ``axhline``, ``step``, a ``LineCollection`` such as error bars), and a legend that covers a marker.
Only the part of a label inside the axes counts (the data is clipped there); an annotation's arrow, grid
lines, tick labels and lines under a legend do not.

``fail_on_overlapping_texts`` is a matplotlib figure hook (rcParam ``figure.hooks``) that makes every
later draw of a figure raise :class:`OverlappingTexts` when texts overlap or the data covers a label; the
test suite runs every chapter with it (a ``matplotlibrc`` that names it, through ``$MATPLOTLIBRC``), so a
chapter whose figure has such labels fails at its ``savefig``. ``log_axis`` gives a log-scale axis short
labels that do not crowd (Chapter 1).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Covered", "OverlappingTexts", "covered_texts", "describe", "drawn_texts",
           "fail_on_overlapping_texts", "log_axis", "overlapping_texts", "si_label", "text_gap"]


class OverlappingTexts(ValueError):
    """Two or more texts of a figure overlap on the drawn figure, or its data covers a label. Explained in
    the preface (Chapter 0)."""


class Covered(NamedTuple):
    """A label the data hides: ``label`` (a text inside an axes, or a legend) is covered by a marker of
    ``artist`` (``how="marker"``, drawn at ``at``, the marker's data coordinates) or crossed by its line
    (``how="line"``, ``at`` None). Explained in the preface (Chapter 0)."""
    label: object
    artist: object
    how: str
    at: tuple[float, float] | None = None


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


_NO_MARKER = ("None", "none", "", " ", None)
_NO_LINE = ("None", "none", "", " ")


def _markers(ax, renderer) -> Iterator[tuple]:
    """The markers ``ax`` draws, per artist (a ``plot`` line with markers, a ``scatter``): ``(artist,
    data, centres, reach, shapes)``: the points in data coordinates, the marker centres in display pixels,
    how far each marker reaches from its centre (x0, y0, x1, y1 in pixels, half the edge width included),
    and ``(outline, half edge)`` of each marker (marker ``i`` is ``shapes[i % len(shapes)]``), the outline
    a path about (0, 0) in pixels. A line's ``markevery`` is not applied: every point counts."""
    import numpy as np
    from matplotlib.collections import PathCollection
    from matplotlib.markers import MarkerStyle
    from matplotlib.transforms import Affine2D
    for line in ax.lines:
        if not line.get_visible() or line.get_marker() in _NO_MARKER or line.get_markersize() <= 0:
            continue
        style = MarkerStyle(line.get_marker())  # drawn as Line2D.draw does: scaled to the size in pixels
        size = 1.0 if style.get_marker() == "," else renderer.points_to_pixels(line.get_markersize())
        outline = style.get_path().transformed(style.get_transform().scale(size))
        data = np.asarray(line.get_xydata(), float)
        edge = renderer.points_to_pixels(line.get_markeredgewidth()) / 2
        yield line, data, line.get_transform().transform(data), _reach([(outline, edge)], len(data)), \
            [(outline, edge)]
    for coll in ax.collections:
        if not isinstance(coll, PathCollection) or not coll.get_visible() or not len(coll.get_offsets()):
            continue
        # as draw_path_collection draws them: path i scaled by transform i (the size, in pixels after a
        # draw), then the collection's transform, then moved to offset i
        paths, scales = coll.get_paths(), coll.get_transforms()
        scales = scales if len(scales) else np.eye(3)[None]
        edges = renderer.points_to_pixels(np.atleast_1d(coll.get_linewidths())) / 2
        n = max(len(paths), len(scales), len(edges))
        shapes = [(paths[i % len(paths)].transformed(Affine2D(scales[i % len(scales)]) + coll.get_transform()),
                   edges[i % len(edges)]) for i in range(n)]
        data = np.asarray(coll.get_offsets(), float)
        yield coll, data, coll.get_offset_transform().transform(data), _reach(shapes, len(data)), shapes


def _reach(shapes, n: int):
    """How far each of ``n`` markers reaches from its centre: (x0, y0, x1, y1) rows, in pixels."""
    import numpy as np
    reach = np.array([[b.x0 - e, b.y0 - e, b.x1 + e, b.y1 + e]
                      for b, e in ((outline.get_extents(), e) for outline, e in shapes)])
    return reach[np.arange(n) % len(reach)]


def _covered_marker(box, centres, reach, shapes) -> int | None:
    """The first marker (index) whose outline touches ``box`` (display pixels), or None."""
    import numpy as np
    from matplotlib.transforms import Bbox
    near = np.flatnonzero((centres[:, 0] + reach[:, 0] <= box.x1) & (centres[:, 0] + reach[:, 2] >= box.x0)
                          & (centres[:, 1] + reach[:, 1] <= box.y1) & (centres[:, 1] + reach[:, 3] >= box.y0))
    for i in near:  # the exact test, on the few markers whose extent meets the box
        outline, edge = shapes[i % len(shapes)]
        (x, y) = centres[i]
        moved = Bbox.from_extents(box.x0 - x - edge, box.y0 - y - edge, box.x1 - x + edge, box.y1 - y + edge)
        if outline.intersects_bbox(moved, filled=True):
            return int(i)
    return None


def _polylines(path) -> Iterator:
    """The pieces of a display path that are drawn as lines: split at each move and at each NaN."""
    import numpy as np
    from matplotlib.path import Path
    for piece in path.to_polygons(closed_only=False):
        finite = np.isfinite(piece).all(axis=1)
        bounds = np.flatnonzero(np.diff(np.r_[0, finite.astype(int), 0]))
        for start, stop in zip(bounds[::2], bounds[1::2]):
            if stop - start >= 2:
                yield Path(piece[start:stop])


def _lines(ax, renderer) -> Iterator[tuple]:
    """The lines ``ax`` draws, per artist: ``(artist, [(polyline in display pixels, half its width)])``,
    for ``plot``, ``axhline`` and ``step`` lines that have a line style, and ``LineCollection`` segments
    (``vlines``, error bars)."""
    import numpy as np
    from matplotlib.collections import LineCollection
    for line in ax.lines:
        if line.get_visible() and line.get_linestyle() not in _NO_LINE and line.get_linewidth() > 0:
            half = renderer.points_to_pixels(line.get_linewidth()) / 2
            path = line.get_transform().transform_path(line.get_path())
            yield line, [(piece, half) for piece in _polylines(path)]
    for coll in ax.collections:
        if isinstance(coll, LineCollection) and coll.get_visible():
            halves = renderer.points_to_pixels(np.atleast_1d(coll.get_linewidths())) / 2
            yield coll, [(piece, halves[i % len(halves)]) for i, path in enumerate(coll.get_paths())
                         for piece in _polylines(coll.get_transform().transform_path(path))
                         if halves[i % len(halves)] > 0]


def _all_axes(fig) -> Iterator:
    yield from (ax for ax in fig.axes if ax.get_visible())
    for sub in getattr(fig, "subfigs", []):
        yield from _all_axes(sub)


def covered_texts(fig, inset: float = 1.0, renderer=None) -> list[Covered]:
    """The labels of ``fig`` that its data hides, as :class:`Covered`: every text drawn inside an axes
    (``ax.text``, the text of ``ax.annotate``) that a marker of the axes covers (its outline at its drawn
    size, edge included) or one of its lines crosses, and every legend of an axes that covers one of its
    markers (lines may run under a legend). Only the part of a label inside the axes counts, less ``inset``
    (1 pt) on every side of a text: a text's box holds room for ascenders and descenders whether or not it
    has any, so a line that grazes its edge touches no letter (the preface's "one 80 GiB accelerator" sits
    on its line, 0.3 pt into its box). Draws the figure first unless a ``renderer`` of a finished draw is given. One entry per label and artist (the
    marker, where it is both). An empty list when the data stays clear of every label. Explained in the
    preface (Chapter 0)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    if renderer is None:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
    out = []
    for ax in _all_axes(fig):
        shrink = -renderer.points_to_pixels(inset)
        labels = [(t, Text.get_window_extent(t, renderer).padded(shrink)) for t in ax.texts  # not the arrow
                  if t.get_visible() and t.get_text().strip()]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            labels.append((legend, legend.get_window_extent(renderer)))
        if not labels:
            continue
        markers, lines = list(_markers(ax, renderer)), list(_lines(ax, renderer))
        for label, box in labels:
            box = Bbox.intersection(box, ax.bbox)  # the data is clipped to the axes
            if box is None or box.width <= 0 or box.height <= 0:
                continue
            hit = set()
            for artist, data, centres, reach, shapes in markers:
                i = _covered_marker(box, centres, reach, shapes)
                if i is not None:
                    hit.add(id(artist))
                    out.append(Covered(label, artist, "marker", (float(data[i, 0]), float(data[i, 1]))))
            if isinstance(label, Text):
                out += [Covered(label, artist, "line") for artist, pieces in lines if id(artist) not in hit
                        and any(piece.intersects_bbox(box.padded(half), filled=False)
                                for piece, half in pieces)]
    return out


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


def _artist(artist) -> str:
    """A data artist in words: "line 'ES'", "scatter 'Pareto front'", "an unlabelled line"."""
    kind = {"Line2D": "line", "PathCollection": "scatter", "LineCollection": "line collection"}.get(
        type(artist).__name__, type(artist).__name__)
    label = str(artist.get_label() or "")
    return f"{kind} {label!r}" if label and not label.startswith("_") else f"an unlabelled {kind}"


def _legend(legend) -> str:
    """An axes' legend in words: 'the legend of axes 1 ("Recall@20")'."""
    fig = legend.get_figure(root=True)
    return next((f"the legend of axes {n}" + (f' ("{ax.get_title()}")' if ax.get_title() else "")
                 for n, ax in enumerate(fig.axes, 1) if ax.get_legend() is legend), "a legend")


def describe(pairs) -> str:
    """One line per problem: for a pair of overlapping texts both texts and where they sit; for a
    :class:`Covered` label the label, the data artist and how it covers the label ("'c = 95 %' (text in
    axes 1) is covered by a marker of line 'MR' at (2.2e+04, 0.211)"). Explained in the preface
    (Chapter 0)."""
    from matplotlib.text import Text
    lines = []
    for pair in pairs:
        if not isinstance(pair, Covered):
            a, b = pair
            lines.append(f"{a.get_text()!r} ({_role(a)}) overlaps {b.get_text()!r} ({_role(b)})")
            continue
        label, artist, how, at = pair
        text = isinstance(label, Text)
        what = f"{label.get_text()!r} ({_role(label)})" if text else _legend(label)
        if how == "marker":
            verb = "is covered by" if text else "covers"
            lines.append(f"{what} {verb} a marker of {_artist(artist)} at ({at[0]:.3g}, {at[1]:.3g})")
        else:
            lines.append(f"{what} is crossed by {_artist(artist)}")
    return "\n".join(lines)


def _check_draw(event) -> None:
    pairs = overlapping_texts(event.canvas.figure, renderer=event.renderer)
    covered = covered_texts(event.canvas.figure, renderer=event.renderer)
    problems = [f"{len(pairs)} pair(s) of overlapping texts"] if pairs else []
    problems += [f"{len(covered)} label(s) the data covers"] if covered else []
    if problems:
        raise OverlappingTexts(" and ".join(problems) + " in the figure:\n" + describe(pairs + covered))


def fail_on_overlapping_texts(fig) -> None:
    """A matplotlib figure hook: every draw of ``fig`` (``savefig``, display) raises
    :class:`OverlappingTexts` when two of its texts overlap. Enable it for all figures with the rcParam
    ``figure.hooks: recsize.plots:fail_on_overlapping_texts`` (a ``matplotlibrc`` file, or
    ``matplotlib.rc_context``). Explained in the preface (Chapter 0)."""
    fig.canvas.mpl_connect("draw_event", _check_draw)
