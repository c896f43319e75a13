"""Every option of every config group composes, and model/dataset options instantiate.

Parametrised over the config folders, so a new YAML file is tested without editing this file.
Methods, norms and streams are instantiated by their own test files (test_methods.py,
test_norms.py, test_stream_configs.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ttabench.config import list_groups
from ttabench.data.base import CorruptionDataset

from .conftest import compose_run

OPTIONS = [  # sweep presets are added with +sweep= and set no part: tests/test_sensitivity.py
    (group, option)
    for group, options in list_groups().items()
    if group != "sweep"
    for option in options
]
REAL_DATA = {"dataset": {"embedded"}, "model": {"embedded"}}  # others need files on disk


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_is_recorded_as_the_choice(group, option):
    cfg = compose_run(f"{group}={option}")
    assert cfg.hydra.runtime.choices[group] == option
    assert "_target_" in cfg[group]


@pytest.mark.parametrize("option", sorted(REAL_DATA["dataset"]))
def test_offline_datasets_instantiate_and_serve_uint8_images(option):
    dataset = instantiate(compose_run(f"dataset={option}").dataset)
    assert isinstance(dataset, CorruptionDataset)
    domain = dataset.domains[0]
    labels = dataset.labels(domain)
    images = dataset.images(domain, np.array([0, 5, 3]))
    assert images.dtype == torch.uint8 and images.shape[:2] == (3, 3)
    assert len(labels) == 256 and labels.max() < dataset.num_classes


@pytest.mark.parametrize("option", sorted(REAL_DATA["model"]))
def test_offline_models_instantiate(option):
    model = instantiate(compose_run(f"model={option}").model)
    assert model(torch.rand(2, 3, 32, 32)).shape[0] == 2


def test_defaults_are_the_public_interface():
    choices = compose_run().hydra.runtime.choices
    assert (choices.model, choices.dataset, choices.stream, choices.method) == (
        "embedded",
        "embedded",
        "iid",
        "source",
    )
    cfg = compose_run()
    assert cfg.stream.batch_size == 64
    assert {"seed", "device", "save_predictions"} <= set(cfg)
