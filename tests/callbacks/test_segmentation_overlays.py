"""Segmentation overlays carry a legend of the class colours (colour -> class name, and the ignored pixels')."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from src.callbacks.segmentation_overlays import colourise, legend_entries, overlay_png


def test_legend_entries_name_each_class_colour_and_the_ignored_pixels():
    entries = legend_entries(3, ["background", "cat", "dog"])
    assert [name for name, _ in entries] == ["background", "cat", "dog", "ignored"]
    labels = np.array([[0, 1], [2, 255]])
    drawn = colourise(labels, 3)
    for (name, colour), pixel in zip(entries, [drawn[0, 0], drawn[0, 1], drawn[1, 0], drawn[1, 1]]):
        assert np.allclose(colour, pixel), name
    assert [name for name, _ in legend_entries(2, None)] == ["0", "1", "ignored"]


def test_overlay_png_draws_the_legend(tmp_path, monkeypatch):
    seen = []
    original = Figure.legend

    def legend(self, *args, **kwargs):
        seen.append([h.get_label() for h in kwargs["handles"]])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "legend", legend)
    images, targets = torch.rand(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    overlay_png(images, targets, targets, None, tmp_path / "o.png", num_classes=3, ignore_index=255,
                class_names=["background", "cat", "dog"])
    assert seen == [["background", "cat", "dog", "ignored"]] and (tmp_path / "o.png").stat().st_size > 1000
