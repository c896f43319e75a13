"""The embedded clean data: seeded, balanced, chunk-stable, and not solvable by colour."""

from __future__ import annotations

import numpy as np
import pytest

from ttabench.data import synthetic


@pytest.fixture(scope="module")
def test_split():
    return synthetic.generate("test")


def test_test_split_is_cifar_sized_and_balanced(test_split):
    images, labels = test_split
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * len(synthetic.CLASSES)
    assert synthetic.SPLITS["train"][1] >= 20_000


def test_same_seed_same_images_other_seed_other_images(test_split):
    images, labels = test_split
    again_images, again_labels = synthetic.generate("test", seed=0)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    other_images, _ = synthetic.generate("test", seed=1)
    assert not np.array_equal(images[:100], other_images[:100])


def test_chunks_are_independent_of_how_much_is_generated(test_split):
    """Image i comes from its chunk's own generator: rendering one chunk alone gives the same."""
    images, labels = test_split
    rng = np.random.default_rng(np.random.SeedSequence([0, synthetic.SPLITS["test"][0], 1]))
    chunk = synthetic._render(labels[synthetic.CHUNK : 2 * synthetic.CHUNK], rng)
    assert np.array_equal(chunk, images[synthetic.CHUNK : 2 * synthetic.CHUNK])


def test_mean_colour_does_not_reveal_the_class(test_split):
    """A nearest-centroid classifier on per-channel mean and std stays near chance (10 %)."""
    images, labels = test_split
    flat = images.reshape(len(images), 3, -1).astype(np.float64)
    feats = np.concatenate([flat.mean(-1), flat.std(-1)], axis=1)
    train, test = slice(0, 5000), slice(5000, None)
    centroids = np.stack([feats[train][labels[train] == k].mean(0) for k in range(10)])
    pred = ((feats[test][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == labels[test]).mean() < 0.2


def test_fingerprint_depends_on_seed_and_is_stable():
    assert synthetic.fingerprint(0) == synthetic.fingerprint(0)
    assert synthetic.fingerprint(0) != synthetic.fingerprint(1)


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="valid"):
        synthetic.generate("validation")
