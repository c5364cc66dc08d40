"""Figures: legends match the artists they label, legends clear of the axis labels, GIF size and frames."""

import io

import numpy as np
from PIL import Image

from conftest import legend_mismatches
from wgflow import plots


def _paths(m, S=12, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(S, m, 2)), axis=0)


def _panels(n, m=6):
    return [{"paths": _paths(m, seed=i), "signs": np.where(np.arange(m) % 3 == 0, -1.0, 1.0), "title": f"panel {i}"} for i in range(n)]


TEACHER = np.array([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.4]])


def test_legend_checker_catches_a_wrong_colour():
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], color="red", label="teacher")
    ax.legend(handles=[Line2D([], [], color="0.3", label="teacher")])
    assert legend_mismatches(fig)  # the old paths legend: grey entry, red rays
    plots.close(fig)


def test_particle_paths_legend_matches_and_clears_the_axis_labels():
    for n_panels in (4, 8):  # one row (the sigmoid experiment) and two
        fig = plots.particle_paths(_panels(n_panels), TEACHER, np.array([1.0, 1.0, -1.0]), xlabel="u1", ylabel="u2", title="t")
        assert legend_mismatches(fig) == []
        labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
        assert labels == {
            plots.PARTICLE_LABEL[1],
            plots.PARTICLE_LABEL[-1],
            plots.TEACHER_LABEL[1],
            plots.TEACHER_LABEL[-1],
        }
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")  # as RunDir.savefig does: the layout is settled
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.legends[0].get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer)), n_panels
                assert not box.overlaps(ax.get_window_extent(renderer)), n_panels
        plots.close(fig)


def test_objective_bands_draw_medians_with_an_interquartile_band():
    t = np.geomspace(0.1, 100, 30)
    values = np.stack([np.exp(-t / s) + 1e-3 for s in (1.0, 2.0, 3.0, 4.0, 50.0)])  # one outlier seed
    fig = plots.objective_bands([{"curves": {"m = 4": (t, values), "m = 10": (t, values / 2)}, "title": "lifted"}], logx=True)
    assert legend_mismatches(fig) == []
    ax = fig.axes[0]
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_ydata(), np.median(values, axis=0))
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    # the band stays within the quartiles, not the min–max (the outlier seed is outside it)
    assert band.max() <= np.quantile(values, 0.75, axis=0).max() + 1e-12
    assert band.max() < values.max(axis=0).max()
    plots.close(fig)


def test_final_vs_width_legend_matches():
    series = {"lifted": ([4, 10], [np.array([0.1, 0.2]), np.array([1e-4, 2e-4])]), "signed": ([4, 10], [np.array([1.0, 2.0]), np.array([0.5, 0.1])])}
    fig = plots.final_vs_width(series, failed={"lifted": [np.array([False, True]), np.array([False, False])]}, threshold=1e-3, threshold_label="success")
    assert legend_mismatches(fig) == []
    plots.close(fig)


def test_particles_gif_is_readable_and_states_the_time():
    times = np.concatenate([[0.0], np.geomspace(0.25, 1e4, 11)])
    panels = _panels(8)  # two parameterisations × four widths
    data = plots.particles_gif(panels, times, TEACHER, np.ones(3), title="demo")
    im = Image.open(io.BytesIO(data))
    assert im.n_frames == len(times)
    assert im.size[0] >= 1000, im.size


def test_success_map_annotates_every_cell():
    values = np.array([[0.0, 0.5], [1.0, np.nan]])
    fig = plots.success_map([{"values": values, "title": "lifted"}], widths=[4, 10], angles=[10.0, 45.0], seeds=2)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0/2", "1/2", "2/2", "–"]
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel()
    plots.close(fig)
