"""The local report's figures, checked as drawn (matplotlib artists, not only that a PNG was written):
a panel for every term an objective logs, a marker for a one-point series, titles inside the sheet;
and the pictures it shows: the samples' title inside its figure, no dark tile in a short grid."""

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import make_vae  # noqa: E402
from vae_lightning.images import ImageLogger, background  # noqa: E402
from vae_lightning.report import curves_figure, sheet_figure, term_names  # noqa: E402


def history(train_steps=(10, 20, 30), extras=("mmd",)) -> list[dict[str, float]]:
    """Rows as the CSV logger writes them: training steps, validation epochs with their bookkeeping
    (active units, KL per dimension), a test row."""
    rows = []
    for i, step in enumerate(train_steps):
        rows.append({"step": step, **{f"train/{k}": 100.0 - i for k in ("recon", "kl", "elbo", "loss", *extras)},
                     "train/beta": 1.0})
    for i, step in enumerate(train_steps[:2]):
        rows.append({"step": step, **{f"val/{k}": 90.0 - i for k in ("recon", "kl", "elbo", *extras)},
                     "val/active_units": 3.0, "val/kl_dim/00": 0.5})
    rows.append({"step": train_steps[-1] + 1, **{f"test/{k}": 80.0 for k in ("recon", "kl", "elbo", *extras)},
                 "test/nll": 85.0})
    return rows


def panels(fig) -> dict[str, plt.Axes]:
    return {ax.get_title(): ax for ax in fig.axes}


def inside(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1


def test_the_terms_an_objective_adds_get_panels_of_their_own():
    runs = {"run": history(extras=("mmd", "tc"))}
    assert term_names(runs) == ["recon", "kl", "elbo", "mmd", "tc"]  # not loss, beta, active_units, kl_dim, nll
    fig = curves_figure(runs, "a run")
    try:
        axes = panels(fig)
        assert list(axes) == ["recon  -E_q[log p(x|z)] (nats)", "KL(q(z|x) || p(z)) (nats)", "ELBO (nats)", "mmd",
                              "tc"]
        mmd = axes["mmd"]
        lines = {line.get_label(): line.get_xydata().tolist() for line in mmd.get_lines()}
        assert lines == {"train": [[10, 100], [20, 99], [30, 98]], "val": [[10, 90], [20, 89]]}
        assert mmd.collections[0].get_offsets().tolist() == [[31, 80]]  # the test point
    finally:
        plt.close(fig)
    # A sweep: the validation curve of each job, extras too.
    fig = curves_figure({"beta=1": history(), "beta=4": history(extras=())}, "a sweep")
    try:
        assert [line.get_label() for line in panels(fig)["mmd"].get_lines()] == ["beta=1"]
    finally:
        plt.close(fig)


def test_a_single_logged_training_point_is_drawn_as_a_marker():
    fig = curves_figure({"run": history(train_steps=(7,))}, "one step")
    try:
        for ax in fig.axes:
            (train,) = [line for line in ax.get_lines() if line.get_label() == "train"]
            assert train.get_xydata().tolist() == [[7, 100]]
            assert train.get_marker() not in (None, "None", "", " ") and train.get_markersize() > 0
        # Many points stay a line without markers.
        fig2 = curves_figure({"run": history(train_steps=tuple(range(0, 500, 10)))}, "many")
        (train,) = [line for line in fig2.axes[0].get_lines() if line.get_label() == "train"]
        assert train.get_marker() in (None, "None")
        plt.close(fig2)
    finally:
        plt.close(fig)


def write_png(path: Path, shape=(40, 36, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.random.default_rng(0).random(shape))
    return path


def test_every_title_of_the_sheet_lies_inside_it_and_apart_from_its_neighbours(tmp_path):
    curves = tmp_path / "curves.png"
    fig = curves_figure({"run": history()}, "run")
    fig.savefig(curves, dpi=50)
    plt.close(fig)
    long = "objective=beta_tcvae objective.beta=6 model/prior=mixture_of_gaussians model.latent_dim=10"
    images = {f"{long} seed={i}": {name: write_png(tmp_path / str(i) / name / "epoch_049.png")
                                   for name in ("reconstructions", "samples", "traversals")} for i in range(2)}
    fig = sheet_figure(curves, images)
    try:
        fig.canvas.draw()
        titled = [ax for ax in fig.axes if ax.get_title()]
        assert len(titled) == 6
        boxes = [ax.title.get_window_extent(fig.canvas.get_renderer()) for ax in titled]
        assert all(inside(fig, ax.title) for ax in titled)
        for i, a in enumerate(boxes):
            assert not any(a.overlaps(b) for b in boxes[i + 1:])
    finally:
        plt.close(fig)


@pytest.fixture(scope="module")
def colour_pictures():
    """The pictures of a small colour model: 10 inputs (a short second row of 8) and 10 samples, from a
    prior with a long name, at a late epoch."""
    torch.manual_seed(0)
    vae = make_vae("model.latent_dim=3", "model.encoder.hidden_dims=[16]", "model/prior=mixture_of_gaussians",
                   input_shape=(3, 8, 8)).eval()
    logger = ImageLogger("unused", num_inputs=10, num_samples=10, traversal_dims=2)
    inputs = torch.rand(10, 3, 8, 8)
    with torch.no_grad():  # as render() draws them
        figures = logger._figures(SimpleNamespace(datamodule=None), vae, {"inputs": inputs}, "epoch 1000, step 1234567")
    yield figures, inputs
    for fig in figures.values():
        plt.close(fig)


def test_the_samples_title_lies_inside_its_figure(colour_pictures):
    figures, _ = colour_pictures
    for name, fig in figures.items():
        fig.canvas.draw()
        title = fig.axes[0].title
        assert inside(fig, title), f"{name}: {title.get_text()!r} runs off the figure"
    assert "MixtureOfGaussians" in figures["samples"].axes[0].get_title()


def test_a_short_row_of_reconstructions_has_no_dark_tiles(colour_pictures):
    figures, inputs = colour_pictures
    grid = np.asarray(figures["reconstructions"].axes[0].get_images()[0].get_array())  # [H', W', 3]
    cell, pad = 8, 2
    assert grid.shape == (4 * (cell + pad) + pad, 8 * (cell + pad) + pad, 3)  # 2 blocks of input + reconstruction

    def tile_at(row, col):
        top, left = pad + row * (cell + pad), pad + col * (cell + pad)
        return grid[top : top + cell, left : left + cell]

    # Rows 2 and 3 hold inputs 8 and 9 and their reconstructions; their 6 other places are empty: the frame's grey.
    np.testing.assert_allclose(tile_at(2, 1), inputs[9].permute(1, 2, 0).numpy(), atol=1e-6)
    for row in (2, 3):
        for col in range(2, 8):
            np.testing.assert_allclose(tile_at(row, col), background(3), atol=1e-6)
    assert background(3) > 0.5 and background(1) < 0.5  # light grey as drawn: colour as is, greyscale as ink
