"""The elastic transform's two resamplers against their references, on every border branch.

``warp_affine`` and ``map_coordinates_reflect`` take a cheap path when all indices lie within
one reflection of the image and a general one otherwise; coordinates here hit both, and the
bands right next to the borders where the two reflection rules differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttabench.data.corruptions.elastic import map_coordinates_reflect, warp_affine
from ttabench.data.corruptions.reference_elastic import cv_warp_affine

ndi = pytest.importorskip("scipy.ndimage")


def coordinates(n: int, spread: float, g: torch.Generator) -> torch.Tensor:
    """(1, n, n) float64 coordinates in [-spread * n, (1 + spread) * n], plus border values."""
    c = (torch.rand(1, n, n, generator=g, dtype=torch.float64) * (1 + 2 * spread) - spread) * n
    edges = torch.tensor([-0.0, -n, -0.5, n - 1, n - 0.5, n, 2 * n - 1, 2 * n - 0.25])
    flat = c.view(-1)
    flat[: len(edges)] = edges[: flat.numel()].to(flat.dtype)
    return c


@pytest.mark.parametrize("n", [2, 5, 32])
@pytest.mark.parametrize("spread", [0.9, 3.0])  # within one reflection; far outside
def test_map_coordinates_reflect_is_scipy(n, spread):
    g = torch.Generator().manual_seed(n)
    image = torch.rand(1, 3, n, n, generator=g).float()
    rows, cols = coordinates(n, spread, g), coordinates(n, spread, g)
    ours = map_coordinates_reflect(image, rows, cols)[0].numpy()  # (C, n, n)
    img = image[0].permute(1, 2, 0).numpy()  # (H, W, C) as the script holds it
    channel = np.broadcast_to(np.arange(3)[:, None, None], (3, n, n))
    idx = (
        np.broadcast_to(rows[0].numpy(), (3, n, n)).reshape(-1),
        np.broadcast_to(cols[0].numpy(), (3, n, n)).reshape(-1),
        channel.reshape(-1),
    )
    ref = ndi.map_coordinates(img, idx, order=1, mode="reflect").reshape(3, n, n)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n", [3, 32])
@pytest.mark.parametrize("scale", [1.1, 4.0])  # a mild warp; one reading far past the borders
def test_warp_affine_is_opencv_fixed_point(n, scale):
    g = torch.Generator().manual_seed(n)
    image = torch.rand(2, 3, n, n, generator=g).float()
    m = torch.tensor(
        [[[scale, 0.2, -0.3 * n], [-0.1, scale, 0.25 * n]], [[0.9, -0.3, 1.7], [0.4, 1.2, -2.2]]],
        dtype=torch.float64,
    )
    ours = warp_affine(image, m)
    for b in range(2):
        ref = cv_warp_affine(image[b].permute(1, 2, 0).numpy(), m[b].numpy())
        np.testing.assert_array_equal(ours[b].permute(1, 2, 0).numpy(), ref)
