"""Shared fixtures: compose the real configs (shrunk to a few hundred samples) and isolate the
data cache, so tests never touch the user's ~/.cache/ttabench."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ttabench.config import config_dir

TINY = [
    "dataset.corruptions=[gaussian_noise,contrast]",
    "dataset.n_per_domain=256",
    "progress=false",
]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("TTABENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def compose_run(*overrides: str, tiny: bool = True) -> DictConfig:
    """The real run.yaml composed with ``overrides`` (shrunk to a tiny benchmark by default)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("run", [*(TINY if tiny else []), *overrides], return_hydra_config=True)


@pytest.fixture
def tiny_cfg():
    return compose_run


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
