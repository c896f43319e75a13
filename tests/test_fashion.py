"""The real-image offline benchmark: Fashion-MNIST-C with the shipped Fashion-MNIST source model.

Reads the clean Fashion-MNIST files (Debian's ``dataset-fashion-mnist`` or ``$TTA_DATA_ROOT``);
without them these tests skip, except where ``TTABENCH_REQUIRE_FASHION_MNIST=1`` (CI installs
the package and sets it), where a missing package fails them.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from ttabench.data.clean import fashion_mnist
from ttabench.models.embedded import WEIGHTS, load_embedded
from ttabench.run import run

from .conftest import compose_run


@pytest.fixture(scope="module")
def fashion_test():
    try:
        images, labels, _ = fashion_mnist(None, "test")
    except FileNotFoundError as exc:
        if os.environ.get("TTABENCH_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail(f"TTABENCH_REQUIRE_FASHION_MNIST=1 but {exc}")
        pytest.skip(f"no clean Fashion-MNIST here: {exc}")
    return torch.from_numpy(images[:2000]), torch.from_numpy(labels[:2000])


def test_the_shipped_fashion_model_records_how_it_was_made():
    record = json.loads((WEIGHTS / "fashion_resnet8.json").read_text())
    assert record["command"].startswith("ttabench pretrain --data fashion_mnist")
    assert record["data"] == "fashion_mnist" and record["num_classes"] == 10
    assert record["clean_test_accuracy"] >= 0.88
    assert compose_run("model=fashion_resnet8").model.weights == "fashion_resnet8"


@torch.no_grad()
def test_the_fashion_model_classifies_real_fashion_images(fashion_test):
    """Clean accuracy on the real test images as recorded (first 2,000), far above the model
    trained on the synthetic data, so the right weights and preprocessing are in use."""
    images, labels = fashion_test
    x = images.float() / 255
    accuracy = (load_embedded(weights="fashion_resnet8")(x).argmax(1) == labels).float().mean()
    record = json.loads((WEIGHTS / "fashion_resnet8.json").read_text())
    assert abs(accuracy.item() - record["clean_test_accuracy"]) < 0.02
    synthetic = (load_embedded()(x).argmax(1) == labels).float().mean()
    assert synthetic < 0.5 < accuracy


def test_a_fashion_mnist_c_run_end_to_end_and_bn_helps_under_noise(fashion_test, tmp_path):
    errors = {}
    for method in ("source", "bn"):
        cfg = compose_run(
            "model=fashion_resnet8",
            "dataset=fashionmnistc",
            "dataset.corruptions=[gaussian_noise,contrast]",
            "dataset.n_per_domain=256",
            f"method={method}",
        )
        summary = run(cfg, tmp_path / method)
        total = summary[summary.domain == "all"].iloc[0]
        assert total.status == "complete" and total.n == 512
        assert "fashion_mnist" in total.provenance
        errors[method] = total.error
    assert 0 < errors["bn"] < errors["source"] < 100


def test_a_shipped_model_on_another_datasets_classes_is_warned_about():
    """Runs on, but says so: the synthetic model's classes are not Fashion-MNIST's."""
    from ttabench.run import check_combination

    with pytest.warns(UserWarning, match="use model=fashion_resnet8"):
        check_combination(compose_run("dataset=fashionmnistc"))
    with pytest.warns(UserWarning, match="trained for dataset=fashionmnistc, not dataset=embedded"):
        check_combination(compose_run("model=fashion_resnet8"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_combination(compose_run("dataset=fashionmnistc", "model=fashion_resnet8"))
