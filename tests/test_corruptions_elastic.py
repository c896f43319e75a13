"""The elastic transform's two resamplers against their references, on every border branch.

Both read their four neighbours through ``neighbours``, which extends the image by the border
over the indices' span, reducing indices modulo the border's period when they spread wider;
coordinates here hit both cases, and the bands right next to the borders where the two
reflection rules differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttabench.data.corruptions.elastic import (
    HALF_SAMPLE,
    REFLECT_101,
    map_coordinates_reflect,
    neighbours,
    warp_affine,
)
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


@pytest.mark.parametrize("border", [REFLECT_101, HALF_SAMPLE], ids=["reflect101", "half"])
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("reach", [1, 40])  # within a period of the image; many periods away
def test_neighbours_equal_folding_every_index(border, n, reach):
    g = torch.Generator().manual_seed(n + reach)
    image = torch.rand(2, 3, n, n + 1, generator=g)
    r0 = torch.randint(-reach * n - 1, reach * n + 1, (2, n, n + 1), generator=g)
    c0 = torch.randint(-reach * n - 1, reach * n + 2, (2, n, n + 1), generator=g)
    got = neighbours(image, r0, c0, border)
    flat = image.reshape(2, 3, -1)
    for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        idx = border.fold(r0 + i, n) * (n + 1) + border.fold(c0 + j, n + 1)
        want = flat.gather(2, idx.reshape(2, 1, -1).expand(2, 3, -1)).reshape(2, 3, n, n + 1)
        assert torch.equal(got[k], want), (i, j)
