"""Pictures of images for runs and reports: sample grids (GANs), labelled rows (reconstructions, adversarial
examples) and attribution maps. Each `*_figure` returns a matplotlib figure (for an imgrec.report.Figure);
`save_grid` and `save_rows` write one to a PNG (what the tasks log each epoch).

Images come in [0, 1] pixel units, (N, C, H, W) with 1 or 3 channels.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from imgrec.report import plt, save


def image_grid(images: torch.Tensor, columns: int, padding: int = 2, fill: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) images, N a multiple of `columns`, -> one (C, H', W') image, row by row."""
    n, channels, height, width = images.shape
    rows = n // columns
    padded = F.pad(images, (padding,) * 4, value=fill)
    h, w = height + 2 * padding, width + 2 * padding
    return padded.view(rows, columns, channels, h, w).permute(2, 0, 3, 1, 4).reshape(channels, rows * h, columns * w)


def show(ax, picture: torch.Tensor) -> None:
    """One (H, W, C) picture in [0, 1] on `ax`: grayscale pictures in gray, without interpolation."""
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")


def save_grid(images: torch.Tensor, columns: int, path: Path, title: str, row_labels: Sequence[str] | None = None) -> None:
    """Images as one grid PNG; `row_labels` names the rows (e.g. the classes of a conditional GAN)."""
    save(grid_figure(images, columns, title, row_labels), path, dpi=100)


def grid_figure(images: torch.Tensor, columns: int, title: str, row_labels: Sequence[str] | None = None):
    grid = image_grid(images.detach().float().cpu().clamp(0, 1), columns).permute(1, 2, 0)
    rows = len(images) // columns
    scale = 2 if grid.shape[0] <= 600 else 1  # small images drawn at 2x, so 28-pixel digits are visible
    fig, ax = plt.subplots(figsize=(grid.shape[1] * scale / 100 + 1.6, grid.shape[0] * scale / 100 + 0.6))
    show(ax, grid)
    ax.set_xticks([])
    if row_labels:
        row_height = grid.shape[0] / rows
        ax.set_yticks([(r + 0.5) * row_height for r in range(rows)], [str(n) for n in row_labels], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return fig


def save_rows(rows: Mapping[str, torch.Tensor], path: Path, title: str,
              captions: Mapping[str, Sequence[str]] | None = None) -> None:
    save(rows_figure(rows, title, captions), path, dpi=100)


def rows_figure(rows: Mapping[str, torch.Tensor], title: str, captions: Mapping[str, Sequence[str]] | None = None):
    """One row of images (N, C, H, W) per entry of `rows`, labelled with its key (e.g. input / reconstruction);
    `captions` puts a line under each image of a row (e.g. what the model predicts for it)."""
    n = len(next(iter(rows.values())))
    extra = 0.25 if captions else 0.0
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, (1.25 + extra) * len(rows) + 0.3), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        images = images.detach().float().cpu().clamp(0, 1)
        for c in range(n):
            show(axes[r][c], images[c].permute(1, 2, 0))
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if captions and label in captions:
                axes[r][c].set_xlabel(captions[label][c], fontsize=6)
        axes[r][0].set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def attributions_figure(images: torch.Tensor, maps: Mapping[str, torch.Tensor], row_labels: Sequence[str], title: str):
    """A grid: one row per image (labelled), the input then one column per method, each method's |attribution|
    (summed over channels, scaled to its 99th percentile per image) laid over the input in a heat colour map."""
    n, columns = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, columns, figsize=(1.15 * columns + 0.9, 1.15 * n + 0.5), squeeze=False)
    images = images.detach().float().cpu().clamp(0, 1)
    for r in range(n):
        picture = images[r].permute(1, 2, 0)
        show(axes[r][0], picture)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
        for c, attribution in enumerate(maps.values(), start=1):
            heat = attribution[r].detach().float().abs().sum(dim=0)
            heat = (heat / heat.flatten().quantile(0.99).clamp_min(1e-12)).clamp(0, 1)
            axes[r][c].imshow(picture.mean(dim=-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r][c].imshow(heat, cmap="inferno", alpha=0.65, vmin=0, vmax=1, interpolation="nearest")
    for c, name in enumerate(["input", *maps]):
        axes[0][c].set_title(name.replace("_", " "), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig
