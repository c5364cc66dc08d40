"""Figures and animations. Every axis is labelled with its quantity (and unit where it has one).

Functions take plain arrays and return a matplotlib ``Figure``; the experiment
runner saves them (PNG + PDF) atomically.
"""

from __future__ import annotations

import io
import warnings
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

POS, NEG = "#c0392b", "#2471a3"  # output weight > 0: red, < 0: blue (Chizat & Bach's colours)
TIME_LABEL = "mean-field time t (Σ of step sizes)"


def _grid(n_panels: int, ncols: int | None = None, size: float = 3.4):
    ncols = ncols or min(n_panels, 4)
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes.flat


def ordered_colors(n: int, top: float = 1.0) -> list:
    """``n`` colours along viridis from 0 to ``top``: for curves ordered by a parameter."""
    return [plt.cm.viridis(top * i / max(n - 1, 1)) for i in range(n)]


def _finish(fig, ax, xlabel: str, ylabel: str, title: str | None, logy: bool, logx: bool = False, legend_size: int = 8):
    """Scales, labels, grid, legend and title of a one-axis figure."""
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_size)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


TEACHER = "0.25"  # teacher neuron directions: dark grey, dashed (output weight > 0) or dotted (< 0)
TEACHER_LABEL = {1: "teacher neuron (output weight > 0)", -1: "teacher neuron (output weight < 0)"}


def _teacher_rays(ax, directions, signs, lim, label: bool = False):
    """Rays from the origin along the teacher neurons' directions (only the direction of a
    neuron is identifiable in the mean-field limit: mass and scale trade off). ``label``: the
    first ray of each sign carries its legend label (the others none)."""
    seen = set()
    for w, s in zip(directions, signs):
        n = np.linalg.norm(w)
        if n > 0:
            end = w / n * lim * 1.5
            sign = 1 if s >= 0 else -1
            name = TEACHER_LABEL[sign] if label and sign not in seen else "_nolegend_"
            seen.add(sign)
            ax.plot([0, end[0]], [0, end[1]], ls="--" if sign > 0 else ":", lw=1.2, color=TEACHER, alpha=0.9, zorder=1, label=name)


PARTICLE_LABEL = {1: "particle, output weight > 0", -1: "particle, output weight < 0"}


def _legend_below(fig, axes, fontsize: float | None = None) -> None:
    """One legend under the panels, from the labelled artists of ``axes`` (each label once)."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False, fontsize=fontsize)


def particle_paths(
    panels: Sequence[dict],
    teacher_directions: np.ndarray | None = None,
    teacher_signs: np.ndarray | None = None,
    xlabel: str = r"$u_1$",
    ylabel: str = r"$u_2$",
    title: str | None = None,
):
    """Each panel: ``paths`` (S, m, 2) over saved times, ``signs`` (m,), ``title``.

    Paths are drawn thin, end points as dots, the teacher neurons' directions as grey
    rays (as in Chizat & Bach 2018, Fig. 2); one legend under the panels.
    """
    ncols = min(len(panels), 4)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes_grid = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.4 * nrows + 0.5), squeeze=False, layout="constrained")
    axes = list(axes_grid.flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels):
        paths, signs = np.asarray(panel["paths"]), np.asarray(panel["signs"])
        labelled = set()
        for k in range(paths.shape[1]):
            sign = 1 if signs[k] > 0 else -1
            ax.plot(
                paths[:, k, 0],
                paths[:, k, 1],
                color=POS if sign > 0 else NEG,
                lw=0.7,
                alpha=0.8,
                label=PARTICLE_LABEL[sign] if sign not in labelled else "_nolegend_",
            )
            labelled.add(sign)
        ax.scatter(paths[-1, :, 0], paths[-1, :, 1], c=[POS if s > 0 else NEG for s in signs], s=10, zorder=3)
        lim = max(np.nanmax(np.abs(paths)) if paths.size else 1.0, 1e-12) * 1.1
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        if teacher_directions is not None:
            _teacher_rays(ax, teacher_directions, teacher_signs if teacher_signs is not None else np.ones(len(teacher_directions)), lim, label=True)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_aspect("equal")
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    _legend_below(fig, axes[: len(panels)])
    if title:
        fig.suptitle(title)
    return fig


def objective_bands(
    panels: Sequence[dict],
    ylabel: str = r"objective $F(\mu_t)$",
    logy: bool = True,
    logx: bool = False,
    title: str | None = None,
    hline: float | None = None,
    hline_label: str = "",
    quantiles: tuple[float, float] = (0.25, 0.75),
):
    """Each panel: ``curves`` = {label: (times (T,), values (seeds, T))}, ``title``.

    Draws the median over seeds and a light band between the ``quantiles`` (default: the
    interquartile range), so that curves of several widths stay apart.
    """
    fig, axes = _grid(len(panels), ncols=min(len(panels), 2), size=4.6)
    lo_q, hi_q = quantiles
    for ax, panel in zip(axes, panels):
        colors = ordered_colors(len(panel["curves"]), top=0.9)
        for (label, (t, values)), color in zip(panel["curves"].items(), colors):
            values = np.asarray(values, dtype=float)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a time at which every run had stopped: all NaN
                med = np.nanmedian(values, axis=0)
                lo, hi = np.nanquantile(values, lo_q, axis=0), np.nanquantile(values, hi_q, axis=0)
            tt = np.asarray(t)
            keep = tt > 0 if logx else np.ones_like(tt, bool)
            ax.plot(tt[keep], med[keep], color=color, lw=1.8, label=f"{label} (median)")
            ax.fill_between(tt[keep], lo[keep], hi[keep], color=color, alpha=0.12, lw=0)
        if hline is not None:
            ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(TIME_LABEL)
        ax.set_ylabel(ylabel)
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def final_vs_width(
    series: dict[str, tuple[np.ndarray, list[np.ndarray]]],
    ylabel: str = r"final objective $F(\mu_T)$",
    logy: bool = True,
    title: str | None = None,
    threshold: float | None = None,
    threshold_label: str = "",
    failed: dict[str, list[np.ndarray]] | None = None,
    failed_label: str = "run stopped: unstable or diverged",
):
    """``series`` = {label: (widths, [values per width (seeds,)])}: every seed as a dot, medians joined.

    ``failed`` = {label: [bool per seed, per width]}: those runs are drawn as crosses (their
    value is where they stopped) and left out of the median.
    """
    fig, ax = plt.subplots(figsize=(5.4, 4.0))
    rng = np.random.default_rng(0)
    any_failed = False
    for i, (label, (widths, values)) in enumerate(series.items()):
        color = plt.cm.tab10(i)
        widths = np.asarray(widths, dtype=float)
        meds = []
        flags = (failed or {}).get(label) or [np.zeros(np.shape(v), bool) for v in values]
        for w, v, bad in zip(widths, values, flags):
            v, bad = np.asarray(v, dtype=float), np.asarray(bad, bool)
            jitter = w * np.exp(rng.uniform(-0.06, 0.06, size=v.shape))
            ax.scatter(jitter[~bad], v[~bad], s=14, color=color, alpha=0.6, lw=0)
            if bad.any():
                any_failed = True
                ax.scatter(jitter[bad], v[bad], s=28, color=color, marker="x", lw=1.2)
            meds.append(np.nanmedian(v[~bad]) if (~bad).any() else np.nan)
        ax.plot(widths, meds, "-o", color=color, label=f"{label} (median over stable runs)")
    if any_failed:
        ax.scatter([], [], s=28, color="0.3", marker="x", lw=1.2, label=failed_label)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=threshold_label)
    ax.set_xscale("log")
    all_widths = sorted({float(w) for widths, _ in series.values() for w in np.asarray(widths)})
    ax.set_xticks(all_widths)
    ax.set_xticklabels([f"{w:g}" for w in all_widths])
    ax.minorticks_off()
    return _finish(fig, ax, "student width m (neurons)", ylabel, title, logy)


def success_map(
    panels: Sequence[dict],
    widths: Sequence[int],
    angles: Sequence[float],
    seeds: int,
    title: str | None = None,
):
    """A heat map per panel: ``values`` (angles × widths) success fractions in [0, 1], each cell
    annotated with its count of successes out of ``seeds``; x: student width, y: angle (degrees)."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(0.9 * len(widths) * n + 2.6, 0.55 * len(angles) + 2.0), squeeze=False)
    image = None
    for ax, panel in zip(axes.flat, panels):
        values = np.asarray(panel["values"], float)
        image = ax.imshow(values, origin="lower", cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                text = "–" if not np.isfinite(v) else f"{int(round(v * seeds))}/{seeds}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="k" if np.isfinite(v) and v > 0.55 else "w")
        ax.set_xticks(range(len(widths)))
        ax.set_xticklabels([str(int(w)) for w in widths])
        ax.set_yticks(range(len(angles)))
        ax.set_yticklabels([f"{a:g}" for a in angles])
        ax.set_xlabel("student width m (neurons)")
        ax.set_ylabel("smallest angle between teacher neurons θ (degrees)")
        ax.set_title(panel.get("title", ""), fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), fraction=0.046, pad=0.04, label="success fraction (over seeds)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lines(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    xlabel: str = TIME_LABEL,
    ylabel: str = r"objective $F(\mu_t)$",
    logy: bool = True,
    logx: bool = False,
    title: str | None = None,
    styles: dict[str, dict] | None = None,
):
    """One line per label: ``curves`` = {label: (x, y)}."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for label, (x, y) in curves.items():
        x, y = np.asarray(x), np.asarray(y)
        keep = x > 0 if logx else np.ones(x.shape, bool)
        ax.plot(x[keep], y[keep], **{"label": label, **(styles or {}).get(label, {})})
    return _finish(fig, ax, xlabel, ylabel, title, logy, logx)


def particles_gif(
    panels: Sequence[dict],
    times: np.ndarray,
    teacher_directions: np.ndarray | None = None,
    teacher_signs: np.ndarray | None = None,
    xlabel: str = r"$u_1$",
    ylabel: str = r"$u_2$",
    fps: int = 8,
    max_frames: int = 60,
    dpi: int = 100,
    ncols: int | None = None,
    title: str = "",
) -> bytes:
    """An animated GIF (bytes) of the particles of each panel moving over the saved times,
    each with a faint trail of its path so far; every frame states its mean-field time.

    Frames are evenly spaced in the saved states (log-spaced snapshots give log-spaced
    frames). ``ncols``: panels per row (default up to 4); at the default ``dpi`` a row of
    four panels is 1300 px wide.
    """
    from matplotlib.collections import LineCollection

    S = len(times)
    frames = np.unique(np.linspace(0, S - 1, min(S, max_frames)).round().astype(int))
    ncols = ncols or min(len(panels), 4)
    nrows = int(np.ceil(len(panels) / ncols))
    size = max(3.6, 10.8 / ncols)  # inches per panel: a row is at least 1080 px wide at 100 dpi
    fig, axes_grid = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.9), squeeze=False, layout="constrained", dpi=dpi)
    axes = list(axes_grid.flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    artists = []
    for ax, panel in zip(axes, panels):
        paths, signs = np.asarray(panel["paths"]), np.asarray(panel["signs"])
        lim = max(np.nanmax(np.abs(paths)) if paths.size else 1.0, 1e-12) * 1.1
        if teacher_directions is not None:
            _teacher_rays(ax, teacher_directions, teacher_signs if teacher_signs is not None else np.ones(len(teacher_directions)), lim, label=True)
        colors = [POS if s > 0 else NEG for s in signs]
        trail = LineCollection([], colors=colors, linewidths=0.7, alpha=0.55)
        ax.add_collection(trail)
        for sign in (1, -1):  # legend entries: one per sign present, coloured as the particles
            if np.any((signs > 0) == (sign > 0)):
                ax.scatter([], [], c=POS if sign > 0 else NEG, s=14, label=PARTICLE_LABEL[sign])
        scat = ax.scatter(paths[0, :, 0], paths[0, :, 1], c=colors, s=14, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        artists.append((scat, trail, paths))
    _legend_below(fig, axes[: len(panels)], fontsize=9)
    label = fig.suptitle("", fontsize=12)

    def update(i):
        for scat, trail, paths in artists:
            scat.set_offsets(paths[i])
            trail.set_segments([paths[: i + 1, k] for k in range(paths.shape[1])])
        label.set_text((title + ": " if title else "") + f"mean-field time t = {times[i]:.4g}")
        return [a for a, _, _ in artists] + [label]

    update(int(frames[-1]))  # lay the figure out once, with the widest title, then keep that layout
    fig.canvas.draw()
    fig.set_layout_engine("none")
    moving = [(ax, a) for ax, (scat, trail, _) in zip(axes, artists) for a in (trail, scat)] + [(fig, label)]
    return _gif_blit(fig, update, frames, fps, moving)


def _encode_gif(render: Callable[[int], np.ndarray], frames, fps: int, colors: int = 64) -> bytes:
    """An animated GIF of the RGB frames ``render(i)``, i in ``frames``, all in one palette of
    ``colors`` taken from the last frame (the fullest: every trail drawn). One palette keeps the
    colours steady from frame to frame, and mapping a frame onto it costs a fraction of choosing
    a palette per frame (60 frames of the main job: 0.3 s against 4.4 s)."""
    from PIL import Image

    palette = Image.fromarray(render(int(frames[-1]))).quantize(colors=colors)
    images = [Image.fromarray(render(int(i))).quantize(palette=palette, dither=Image.Dither.NONE) for i in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def _gif_blit(fig, draw_frame, frames, fps: int, moving) -> bytes:
    """As :func:`_gif`, drawing the still parts (axes, ticks, labels, rays) once and, per frame,
    only the ``moving`` artists ((axes or figure, artist) pairs) over them; closes ``fig``."""
    for _, artist in moving:
        artist.set_animated(True)
    fig.canvas.draw()
    background = fig.canvas.copy_from_bbox(fig.bbox)

    def render(i):
        fig.canvas.restore_region(background)
        draw_frame(i)
        for owner, artist in moving:
            owner.draw_artist(artist)
        return np.asarray(fig.canvas.buffer_rgba())[..., :3]

    try:
        return _encode_gif(render, frames, fps)
    finally:
        plt.close(fig)


def _gif(fig, draw_frame, frames, fps: int) -> bytes:
    """Render ``draw_frame(i)`` for each i of ``frames`` on ``fig`` into an animated GIF (bytes); closes ``fig``."""

    def render(i):
        draw_frame(i)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3]

    try:
        return _encode_gif(render, frames, fps)
    finally:
        plt.close(fig)


def panels(
    panel_curves: Sequence[dict],
    xlabel: str = TIME_LABEL,
    logy: bool = True,
    logx: bool = False,
    title: str | None = None,
    styles: dict[str, dict] | None = None,
):
    """Side-by-side line plots sharing an x quantity: each panel is ``{"ylabel", "curves": {label: (x, y)}, "title"?}``."""
    fig, axes = _grid(len(panel_curves), ncols=len(panel_curves), size=4.2)
    for ax, panel in zip(axes, panel_curves):
        for label, (x, y) in panel["curves"].items():
            x, y = np.asarray(x, float), np.asarray(y, float)
            keep = np.isfinite(y) & ((x > 0) if logx else True) & ((y > 0) if logy else True)
            ax.plot(x[keep], y[keep], **{"label": label, **(styles or {}).get(label, {})})
        if logy:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel["ylabel"])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _density_row(axes, row: dict, extent, lim, teacher_directions, teacher_signs, xlabel, ylabel):
    """The positive and the negative part of a grid measure (mass per unit area), then the particles."""
    ax_pos, ax_neg, ax_p = axes
    images = []
    for ax, key, cmap in ((ax_pos, "positive", "Reds"), (ax_neg, "negative", "Blues")):
        dens = np.asarray(row[key])
        images.append(ax.imshow(dens.T, origin="lower", extent=extent, cmap=cmap, vmin=0.0, vmax=max(float(dens.max()), 1e-300), interpolation="nearest"))
    pts, signs = np.asarray(row["particles"]), np.asarray(row["signs"])
    ax_p.scatter(pts[:, 0], pts[:, 1], c=np.where(signs > 0, POS, NEG), s=1.0, alpha=0.35, linewidths=0)
    grid_label = row.get("grid_label", "grid")
    labels = (f"{grid_label}: $\\mu^+$", f"{grid_label}: $\\mu^-$", row.get("particle_label", "particles"))
    for ax, label in zip(axes, labels):
        if teacher_directions is not None:
            _teacher_rays(ax, teacher_directions, teacher_signs if teacher_signs is not None else np.ones(len(teacher_directions)), lim)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{label}, t = {row['time']:.3g}", fontsize=8)
    return images


def density_vs_particles(
    rows: Sequence[dict],
    extent: tuple[float, float, float, float],
    teacher_directions: np.ndarray | None = None,
    teacher_signs: np.ndarray | None = None,
    xlabel: str = r"$u_1$",
    ylabel: str = r"$u_2$",
    title: str | None = None,
):
    """One row per time: the grid measure's positive and negative densities beside the particles
    (red: positive output weight, blue: negative; grey rays: the teacher's neurons, dashed for a positive output weight, dotted for a negative one).

    Each row: ``positive``, ``negative`` (n1, n2) masses per unit area, ``particles`` (m, 2),
    ``signs`` (m,), ``time``; optional ``grid_label``, ``particle_label``.
    """
    fig, axes = plt.subplots(len(rows), 3, figsize=(11.0, 3.4 * len(rows)), squeeze=False)
    lim = max(abs(v) for v in extent)
    for row_axes, row in zip(axes, rows):
        for ax, image in zip(row_axes, _density_row(row_axes, row, extent, lim, teacher_directions, teacher_signs, xlabel, ylabel)):
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mass / area")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def density_vs_particles_gif(
    rows: Sequence[dict],
    extent: tuple[float, float, float, float],
    teacher_directions: np.ndarray | None = None,
    teacher_signs: np.ndarray | None = None,
    xlabel: str = r"$u_1$",
    ylabel: str = r"$u_2$",
    fps: int = 4,
    dpi: int = 72,
) -> bytes:
    """An animated GIF (bytes), one frame per row of :func:`density_vs_particles`."""
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.4))
    fig.set_dpi(dpi)
    lim = max(abs(v) for v in extent)

    def draw(i):
        for ax in axes:
            ax.clear()
        _density_row(axes, rows[i], extent, lim, teacher_directions, teacher_signs, xlabel, ylabel)
        fig.tight_layout()

    return _gif(fig, draw, range(len(rows)), fps)


def plot_measure(
    mu,
    parameterisation=None,
    *,
    activation: str = "relu",
    ax=None,
    title: str | None = None,
    teacher_directions: np.ndarray | None = None,
    teacher_signs: np.ndarray | None = None,
    size: float = 4.2,
):
    """One measure in one call: a particle cloud (a :class:`~wgflow.measure.Measure`) or a grid
    density (a :class:`~wgflow.grid.GridMeasure`). Returns the matplotlib ``Figure``.

    Particles: with ``parameterisation`` (a name or a :class:`~wgflow.units.Parameterisation`),
    each atom is drawn at ``|c(θ)| v(θ)`` (its unit is ``c(θ) σ(v(θ)·x)``; for ReLU this is the
    2-homogeneous representative Chizat & Bach draw), coloured by the sign of its output weight
    times its mass (red +, blue −), with an area proportional to ``|mass|``; without it, at the
    first two coordinates of θ. Grid: the signed density Σ_c sign_c · mass_c / cell volume on
    the first two grid axes (further axes summed over; one axis: a curve). ``ax``: draw into
    these axes (its figure is returned). ``teacher_directions``: grey rays, as in the
    experiments' figures.
    """
    from wgflow.grid.measures import GridMeasure
    from wgflow.measure import Measure

    if ax is None:
        fig, ax = plt.subplots(figsize=(size + (1.0 if isinstance(mu, GridMeasure) else 0.0), size))
    else:
        fig = ax.figure
    if isinstance(mu, GridMeasure):
        _plot_grid_density(fig, ax, mu)
    elif isinstance(mu, Measure):
        _plot_particles(ax, mu, parameterisation, activation)
    else:
        from wgflow.errors import InputError

        raise InputError("mu", f"must be a wgflow Measure or GridMeasure, got {type(mu).__name__}")
    if teacher_directions is not None:
        lim = max(abs(v) for v in (*ax.get_xlim(), *ax.get_ylim()))
        dirs = np.asarray(teacher_directions)[:, :2]
        _teacher_rays(ax, dirs, teacher_signs if teacher_signs is not None else np.ones(len(dirs)), lim)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _plot_particles(ax, mu, parameterisation, activation: str) -> None:
    from wgflow.errors import InputError

    pos, mass = np.asarray(mu.positions, float), np.asarray(mu.masses, float)
    if pos.ndim != 2:
        raise InputError("mu", f"has positions of shape {pos.shape}: a batch of measures", "plot one of them: Measure(mu.positions[i], mu.masses[i])")
    if parameterisation is not None:
        from wgflow.units import get_parameterisation

        unit = get_parameterisation(parameterisation, activation)
        c = np.broadcast_to(np.asarray(unit.output_weight(pos), float), mass.shape)
        pts = np.abs(c)[:, None] * np.asarray(unit.direction(pos), float)
        signs = np.where(c * mass < 0, -1.0, 1.0)
        xlabel, ylabel = r"$u_1 = |c(\theta)|\,v_1(\theta)$", r"$u_2 = |c(\theta)|\,v_2(\theta)$"
        what = f"{unit.name} particles, unit $c(\\theta)\\,\\sigma(v(\\theta)\\cdot x)$"
    else:
        pts, signs = pos, np.where(mass < 0, -1.0, 1.0)
        xlabel, ylabel = r"$\theta_1$", r"$\theta_2$"
        what = "particles (first two coordinates of θ)"
    if pts.shape[1] == 1:
        pts = np.concatenate([pts, np.zeros_like(pts)], axis=1)
        ylabel = "(one coordinate)"
    scale = np.abs(mass) / max(float(np.abs(mass).max()), 1e-300)
    ax.scatter(pts[:, 0], pts[:, 1], s=4.0 + 60.0 * scale, c=np.where(signs > 0, POS, NEG), alpha=0.7, linewidths=0)
    ax.scatter([], [], s=20, c=POS, label="positive output weight × mass")
    ax.scatter([], [], s=20, c=NEG, label="negative")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", title=f"{len(mass)} atoms, area ∝ |mass|", title_fontsize=7)
    ax.set_title(what, fontsize=9)


def _plot_grid_density(fig, ax, gm) -> None:
    grid = gm.grid
    masses = np.asarray(gm.masses, float)
    signed = np.tensordot(np.asarray(gm.signs, float), masses, axes=1)  # (N,)
    density = signed / grid.volumes()
    names = ["angle φ (rad)" if (k == 0 and grid.embedding == "circle") else f"grid coordinate ξ$_{k + 1}$" for k in range(grid.ndim)]
    kind = "signed density Σ sign·mass / cell volume"
    if len(grid.blocks) > 1:  # several blocks: the points, coloured by density
        xi = grid.coords()
        lim = max(float(np.abs(density).max()), 1e-300)
        sc = ax.scatter(xi[:, 0], xi[:, 1] if grid.ndim > 1 else np.zeros(len(xi)), c=density, cmap="RdBu_r", vmin=-lim, vmax=lim, s=6)
        fig.colorbar(sc, ax=ax, label=kind)
    elif grid.ndim == 1:
        ax.plot(grid.blocks[0][0].points, density, color="k")
        ax.set_ylabel(kind)
    else:
        shape = grid.shape
        cell = grid.volumes().reshape(shape)
        mass_nd = signed.reshape(shape)
        if grid.ndim > 2:  # marginal on the first two axes: mass summed, divided by the 2-D cell area
            other = tuple(range(2, grid.ndim))
            mass2 = mass_nd.sum(axis=other)
            area = np.outer(grid.blocks[0][0].widths, grid.blocks[0][1].widths)
            dens2 = mass2 / area
            kind = "marginal " + kind
        else:
            dens2 = mass_nd / cell
        a0, a1 = grid.blocks[0][0], grid.blocks[0][1]
        lim = max(float(np.abs(dens2).max()), 1e-300)
        mesh = ax.pcolormesh(_edges(a0.points), _edges(a1.points), dens2.T, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="flat")
        fig.colorbar(mesh, ax=ax, label=kind)
    ax.set_xlabel(names[0])
    if grid.ndim > 1:
        ax.set_ylabel(names[1])
    ax.set_title(f"grid measure: N = {grid.size} points, total |mass| {float(np.abs(masses).sum()):.3g}", fontsize=9)


def _edges(points: np.ndarray) -> np.ndarray:
    """Cell edges around ``points`` (midpoints between them, half a cell beyond the ends)."""
    p = np.asarray(points, float)
    if p.size == 1:
        return np.array([p[0] - 0.5, p[0] + 0.5])
    mid = (p[1:] + p[:-1]) / 2
    return np.concatenate([[p[0] - (mid[0] - p[0])], mid, [p[-1] + (p[-1] - mid[-1])]])


def close(fig) -> None:
    plt.close(fig)


__all__ = ["particle_paths", "objective_bands", "final_vs_width", "success_map", "lines", "particles_gif", "plot_measure", "close"]
