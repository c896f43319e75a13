"""Every stream preset in configs/stream/ composes, instantiates and builds (Hydra 1.3).

Composed twice: against the real configs/run.yaml (when it exists) and against a minimal
run.yaml holding only ``seed``/``stream_seed`` next to a link to configs/stream, so a change
elsewhere in the run config cannot hide a broken preset and vice versa.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttabench.domains import Domain
from ttabench.streams import Stream

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {
    "iid": {"domains": "single", "labels": "iid"},
    "dirichlet": {"domains": "single", "labels": "dirichlet", "delta": 0.1},
    "continual": {"domains": "continual", "labels": "iid"},
    "mixed": {"domains": "mixed", "labels": "iid"},
    "ptta": {"domains": "continual", "labels": "dirichlet_rotta", "delta": 0.1},
    "mixed_dirichlet": {"domains": "mixed", "labels": "dirichlet", "delta": 0.01},
    "sorted": {"domains": "single", "labels": "sorted"},
    "imbalanced": {"domains": "single", "labels": "imbalanced"},
    "gradual": {"domains": "gradual", "labels": "iid"},
    "markov": {"domains": "single", "labels": "markov"},
}
MINIMAL_RUN = "defaults:\n  - stream: iid\n  - _self_\n\nseed: 0\nstream_seed: ${seed}\n"


@pytest.fixture(params=["real", "minimal"])
def config_dir(request, tmp_path) -> Path:
    if request.param == "real":
        return CONFIGS
    (tmp_path / "run.yaml").write_text(MINIMAL_RUN)
    (tmp_path / "stream").symlink_to(CONFIGS / "stream", target_is_directory=True)
    return tmp_path


def stream_config(config_dir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="run", overrides=overrides)


def test_the_presets_of_the_issue_exist():
    assert set(PRESETS) <= {p.stem for p in (CONFIGS / "stream").glob("*.yaml")}


def test_iid_preset_spells_out_every_knob():
    params = inspect.signature(Stream.__init__).parameters
    knobs = {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    raw = OmegaConf.load(CONFIGS / "stream" / "iid.yaml")
    assert set(raw) == knobs | {"_target_"}
    assert raw["_target_"] == "ttabench.streams.Stream"
    assert OmegaConf.to_container(raw)["seed"] == "${stream_seed}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_instantiates_and_builds(config_dir, preset):
    cfg = stream_config(config_dir, [f"stream={preset}", "seed=5"])
    stream = instantiate(cfg.stream)
    assert isinstance(stream, Stream)
    assert {k: stream.config()[k] for k in PRESETS[preset]} == PRESETS[preset]
    assert stream.batch_size == 64 and stream.seed == 5
    y = np.repeat(np.arange(10), 100)
    plan = stream.build([Domain("snow", 5), Domain("fog", 5)], lambda d: y)
    assert plan.n_batches > 0 and plan.resets[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["stream=dirichlet", "stream.delta=0.01"], {"labels": "dirichlet", "delta": 0.01}),
        (
            ["stream=continual", "stream.labels=dirichlet"],
            {"domains": "continual", "labels": "dirichlet", "delta": 0.1},
        ),
        (["stream=ptta", "stream.batch_size=1"], {"labels": "dirichlet_rotta", "batch_size": 1}),
        (["stream=markov", "stream.rho=0.5"], {"labels": "markov", "rho": 0.5}),
    ],
)
def test_knobs_override_on_the_command_line(config_dir, overrides, expected):
    stream = instantiate(stream_config(config_dir, overrides).stream)
    assert {k: stream.config()[k] for k in expected} == expected


def test_stream_seed_defaults_to_seed_and_can_be_set_apart(config_dir):
    assert instantiate(stream_config(config_dir, ["seed=3"]).stream).seed == 3
    apart = stream_config(config_dir, ["seed=3", "stream_seed=7"])
    assert instantiate(apart.stream).seed == 7 and apart.seed == 3


def test_a_bad_knob_in_a_config_is_a_clear_error(config_dir):
    cfg = stream_config(config_dir, ["stream=dirichlet", "stream.delta=0"])
    with pytest.raises(Exception, match="delta"):  # Hydra wraps the ValueError
        instantiate(cfg.stream)
