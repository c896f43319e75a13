"""Clean source samples for methods that need them (EATA's Fisher), read from the real formats:
CIFAR python train batches, Fashion-MNIST idx files, ImageNet class folders, the embedded split."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from ttabench.data.source_data import _in_memory_train, source_data_provider

from .c_fixtures import write_idx, write_imagenet_val


def write_cifar_train(root, per_batch: int = 6) -> np.ndarray:
    """``cifar-10-batches-py/data_batch_1..5``; image i has every byte equal to i."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        ids = np.arange(b * per_batch, (b + 1) * per_batch)
        data = np.repeat(ids[:, None], 3072, axis=1).astype(np.uint8)
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({"data": data, "labels": (ids % 10).tolist()}, f)
    return np.arange(5 * per_batch)


def test_cifar_train_batches_give_distinct_reproducible_samples(tmp_path):
    write_cifar_train(tmp_path)
    images, labels = source_data_provider("cifar10c", tmp_path, seed=3)(12)
    ids = images[:, 0, 0, 0].numpy().astype(int)
    assert images.shape == (12, 3, 32, 32) and len(set(ids)) == 12, "drawn without replacement"
    assert (labels.numpy() == ids % 10).all(), "labels stay with their images"
    again, _ = source_data_provider("cifar10c", tmp_path, seed=3)(12)
    other, _ = source_data_provider("cifar10c", tmp_path, seed=4)(12)
    assert (again == images).all() and not (other == images).all()
    with pytest.raises(ValueError, match="30 exist"):
        source_data_provider("cifar10c", tmp_path)(31)


def test_missing_source_data_names_the_key_and_the_layout(tmp_path):
    layout = r"<source_data>/cifar-10-batches-py.*Set source_data="
    with pytest.raises(FileNotFoundError, match=layout):
        source_data_provider("cifar10c", tmp_path / "nowhere")(10)
    with pytest.raises(ValueError, match="no clean source split"):
        source_data_provider("tinyimagenetc", tmp_path)(10)


def test_fashion_mnist_train_files_are_padded_to_32_rgb(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_idx(folder / "train-images-idx3-ubyte.gz", np.full((8, 28, 28), 200))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(8) % 10)
    images, labels = source_data_provider("fashionmnistc", tmp_path)(4)
    assert images.shape == (4, 3, 32, 32) and (images[:, :, 2:30, 2:30] == 200).all()
    assert (images[:, :, :2] == 0).all() and labels.max() < 8


def test_imagenet_class_folders_are_preprocessed_like_the_test_set(tmp_path):
    write_imagenet_val(tmp_path, ["n01440764", "n01443537"], files=3)
    shutil.move(tmp_path / "val", tmp_path / "train")
    images, labels = source_data_provider("imagenetc", tmp_path)(4)
    assert images.shape == (4, 3, 224, 224) and set(labels.tolist()) <= {0, 1}


def test_embedded_source_samples_come_from_the_train_split():
    images, labels = source_data_provider("embedded", None)(50)
    train, train_labels = _in_memory_train("embedded", None, 0)
    where = {train[i].tobytes(): i for i in range(len(train))}
    found = [where.get(img.numpy().tobytes()) for img in images]
    assert None not in found and (train_labels[found] == labels.numpy()).all()
