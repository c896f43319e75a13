"""The model zoo: architectures against published counts and key layouts, checkpoint formats and
offline resolution, normalisation, and clear errors. Every checkpoint is created here; nothing
is downloaded. The WRN-28-10 (36 M parameters) is built once for the module."""

from __future__ import annotations

import hashlib
import math
from argparse import Namespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import save_file
from torch import nn

from ttabench.models import checkpoints as ck
from ttabench.models import zoo
from ttabench.models.features import classifier_of, features_and_logits
from ttabench.models.resnext import AugMixResNeXt, CifarResNeXt
from ttabench.models.small_resnet import SmallResNet
from ttabench.models.wide_resnet import WideResNet
from ttabench.norms.bn import BatchStatsNorm
from ttabench.norms.source import SourceNorm
from ttabench.run import run

from .conftest import compose_run

RESNEXT_FILE = ("cifar100", "corruptions", "Hendrycks2020AugMix_ResNeXt.pt")


@pytest.fixture(autouse=True)
def _no_stray_weights(tmp_path, monkeypatch):
    """Run in an empty directory (./models, ./ckpt) with empty caches and no $TTA_MODEL_DIR."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ck.MODEL_DIR_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))


@pytest.fixture(scope="module")
def wrn():
    return WideResNet(depth=28, widen_factor=10).eval()


@pytest.fixture(scope="module")
def resnext():
    return AugMixResNeXt().eval()


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def rand_bn_stats(net: nn.Module) -> nn.Module:
    """Non-default running statistics, so a load that skipped them would be noticed."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


# --- architectures: published parameter counts and checkpoint key layouts ---------------------


def test_wrn28_10_has_the_published_parameter_count_and_robustbench_keys(wrn):
    assert n_params(wrn) == 36_479_194  # Zagoruyko & Komodakis: 36.5 M
    keys = set(wrn.state_dict())
    assert len(keys) == 155
    assert {"conv1.weight", "bn1.running_var", "fc.weight", "fc.bias"} <= keys
    assert "block1.layer.0.convShortcut.weight" in keys  # 16 -> 160 channels
    assert "block1.layer.1.convShortcut.weight" not in keys
    assert {f"block{b}.layer.3.conv2.weight" for b in (1, 2, 3)} <= keys
    assert not any(k.startswith("sub_block1") for k in keys)


def test_resnext29_augmix_parameter_count_matches_the_architecture(resnext):
    def bottleneck(cin: int, width: int, cout: int, cardinality: int = 4) -> int:
        convs = cin * width + width * (width // cardinality) * 9 + width * cout
        projection = cin * cout + 2 * cout if cin != cout else 0
        return convs + 2 * (2 * width + cout) + projection

    expected = 3 * 64 * 9 + 2 * 64 + 1024 * 100 + 100
    for cin, width, cout in ((64, 128, 256), (256, 256, 512), (512, 512, 1024)):
        expected += bottleneck(cin, width, cout) + 2 * bottleneck(cout, width, cout)
    assert n_params(resnext) == expected == 6_900_132
    keys = set(resnext.state_dict())
    assert {"conv_1_3x3.weight", "bn_1.weight", "classifier.bias", "mu", "sigma"} <= keys
    assert "stage_1.0.downsample.0.weight" in keys and "stage_1.0.downsample.1.weight" in keys
    assert "stage_1.1.downsample.0.weight" not in keys
    assert {"conv_reduce", "bn_reduce", "conv_conv", "bn", "conv_expand", "bn_expand"} == {
        k.split(".")[2] for k in keys if k.startswith("stage_3.2.")
    }


def test_resnet50_has_the_torchvision_parameter_count():
    from torchvision.models import ResNet50_Weights

    model = zoo.load_resnet50(pretrained=False)
    assert n_params(model) == 25_557_032 == ResNet50_Weights.IMAGENET1K_V1.meta["num_params"]


# --- checkpoint formats --------------------------------------------------------------------------


def _formats(sd: dict) -> dict:
    return {
        "plain": sd,
        # A training checkpoint: metrics and arguments next to the weights (data only).
        "state_dict": {"state_dict": sd, "acc": np.float64(0.9), "args": Namespace(lr=0.1)},
        "module": {f"module.{k}": v for k, v in sd.items()},
        "model": {f"model.{k}": v for k, v in sd.items()},
        "state_dict+module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }


@pytest.mark.parametrize("fmt", [*_formats({}), "safetensors"])
def test_every_checkpoint_format_loads_the_same_weights(tmp_path, fmt):
    source = rand_bn_stats(SmallResNet(10)).eval()
    sd = source.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(_formats(sd)[fmt], path)
    target = SmallResNet(10).eval()
    ck.load_weights(target, path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(target(x), source(x))


def test_checkpoint_without_num_batches_tracked_loads(tmp_path):
    # Pre-0.4.1 checkpoints (e.g. torchvision's ResNet-50 V1 era) lack these buffers.
    sd = {k: v for k, v in SmallResNet(10).state_dict().items() if "num_batches" not in k}
    ck.load_strict(SmallResNet(10), sd)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("fc.bias"), "missing key fc.bias"),
        (lambda sd: sd.update(extra=torch.zeros(1)), "unexpected key extra"),
        (
            lambda sd: sd.update({"fc.weight": torch.zeros(3, 64)}),
            r"fc.weight: checkpoint \(3, 64\)",
        ),
    ],
)
def test_key_or_shape_mismatch_is_a_clear_error(edit, message):
    sd = dict(SmallResNet(10).state_dict())
    edit(sd)
    with pytest.raises(ck.CheckpointMismatchError, match=message):
        ck.load_strict(SmallResNet(10), sd, "w.pt")


def test_unreadable_files_say_why(tmp_path):
    html = tmp_path / "Standard.pt"
    html.write_bytes(b"<!DOCTYPE html><html>Google Drive - Virus scan warning</html>")
    with pytest.raises(ValueError, match="HTML page"):
        ck.read_state_dict(html)
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a whole module: refused by weights_only=True
    with pytest.raises(ValueError, match="weights_only=True"):
        ck.read_state_dict(pickled)


def test_sha256_full_or_prefix_and_mismatch(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(SmallResNet(10).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ck.verify_sha256(path, digest)
    ck.verify_sha256(path, digest[:8].upper())
    ck.verify_sha256(path, None)
    with pytest.raises(ValueError, match="does not match model.sha256=0000"):
        ck.verify_sha256(path, "0" * 64)
    with pytest.raises(ValueError, match="not a hex SHA-256"):
        ck.verify_sha256(path, "abc")


# --- resolution order and the missing-file message ----------------------------------------------


def test_model_dirs_are_searched_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv(ck.MODEL_DIR_ENV, str(tmp_path / "env"))
    found = ck.robustbench_candidates("cifar10", "Standard", tmp_path / "cfg")
    assert [c.path for c in found] == [
        tmp_path / d / "cifar10" / "corruptions" / "Standard.pt"
        for d in ("cfg", "env", "models", "ckpt")
    ]
    for c in reversed(found):  # each earlier place wins over the later ones
        c.path.parent.mkdir(parents=True, exist_ok=True)
        c.path.touch()
        assert ck.resolve_checkpoint("x", found) == c.path


def test_missing_weights_name_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.setenv(ck.MODEL_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(ck.MissingCheckpointError) as err:
        zoo.load_resnext29_augmix(model_dir=tmp_path / "cfg")
    text = str(err.value)
    for folder in ("cfg", "env", "models", "ckpt"):
        assert str(tmp_path.joinpath(folder, *RESNEXT_FILE)) in text
    assert "model.pretrained=false" in text and "robustbench.utils.load_model" in text
    with pytest.raises(ck.MissingCheckpointError, match="nothere.pt"):
        zoo.load_wrn28_10(checkpoint=tmp_path / "nothere.pt")
    with pytest.raises(ValueError, match="pretrained=false"):
        zoo.load_wrn28_10(checkpoint=tmp_path / "nothere.pt", pretrained=False)


def test_missing_torchvision_and_timm_weights_name_the_library_caches(tmp_path):
    with pytest.raises(ck.MissingCheckpointError) as err:
        zoo.load_resnet50()
    assert str(tmp_path / "torch_home/hub/checkpoints/resnet50-0676ba61.pth") in str(err.value)
    assert "imagenet/corruptions/Standard_R50.pt" in str(err.value)
    with pytest.raises(ck.MissingCheckpointError) as err:
        zoo.load_timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    repo = tmp_path / "hf_hub/models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert str(repo / "snapshots/*/model.safetensors") in str(err.value)
    assert "checkpoints/Ti_16-i21k-300ep" in str(err.value)  # timm's own torch hub file


# --- presets end to end ---------------------------------------------------------------------------


def test_wrn28_10_preset_loads_a_robustbench_cache_file(tmp_path, wrn):
    rand_bn_stats(wrn)
    path = tmp_path.joinpath("store", "cifar10", "corruptions", "Standard.pt")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in wrn.state_dict().items()}}, path)
    model = instantiate(compose_run("model=wrn28_10", f"model.model_dir={tmp_path}/store").model)
    assert not model.training
    assert model.mean.flatten().tolist() == [0.0] * 3 and model.std.flatten().tolist() == [1.0] * 3
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 10)
        assert torch.allclose(out, wrn(x), atol=1e-5)  # [0, 1] input, no normalisation


def test_resnext_preset_accepts_missing_mu_sigma_and_normalises_inside(tmp_path, resnext):
    rand_bn_stats(resnext)
    sd = {k: v for k, v in resnext.state_dict().items() if k not in ("mu", "sigma")}
    path = tmp_path.joinpath("models", *RESNEXT_FILE)  # ./models: RobustBench's default
    path.parent.mkdir(parents=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    model = zoo.load_resnext29_augmix()
    assert torch.equal(model.net.mu, torch.full((1, 3, 1, 1), 0.5))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = CifarResNeXt.forward(resnext, (x - 0.5) / 0.5)
        assert torch.allclose(model(x), expected, atol=1e-5)
    sd.pop("classifier.bias")  # only mu/sigma may be missing
    torch.save(sd, path)
    with pytest.raises(ck.CheckpointMismatchError, match="missing key classifier.bias"):
        zoo.load_resnext29_augmix()


def test_resnet50_preset_reads_the_torch_hub_cache_with_imagenet_normalisation(tmp_path):
    source = rand_bn_stats(zoo.load_resnet50(pretrained=False).net)
    path = tmp_path / "torch_home/hub/checkpoints/resnet50-0676ba61.pth"
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = instantiate(compose_run("model=resnet50", f"model.sha256={digest[:12]}").model)
    assert torch.equal(model.net.fc.weight, source.fc.weight)
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    with pytest.raises(ValueError, match="SHA-256"):
        zoo.load_resnet50(sha256="0676ba61")  # the real file's prefix: not this file


def test_torchvision_preset_by_name(tmp_path):
    model = instantiate(
        compose_run("model=torchvision", "model.name=resnet18", "model.pretrained=false").model
    )
    assert n_params(model) == 11_689_512 and model(torch.rand(2, 3, 64, 64)).shape == (2, 1000)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        zoo.load_torchvision("resnet18", weights="V9", pretrained=False)
    with pytest.raises(ValueError, match="not a torchvision classification model"):
        zoo.load_torchvision("fcn_resnet50", pretrained=False)


# --- models without BatchNorm (timm) --------------------------------------------------------------

TINY_VIT = ["model=timm", "model.name=vit_tiny_patch16_224", "+model.kwargs.img_size=32"]


def test_timm_vit_uses_its_own_mean_std_and_works_without_batchnorm():
    cfg = compose_run(*TINY_VIT, "model.pretrained=false", "model.num_classes=10")
    model = instantiate(cfg.model)
    # timm's ViT wants 0.5/0.5, not ImageNet statistics (the mistake reported against SAR).
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert SourceNorm().apply(model)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="model has none"):
        BatchStatsNorm().apply(model)


@pytest.mark.slow  # ~20 s: generates the corrupted embedded data
def test_a_run_with_a_layernorm_model_completes_and_norm_bn_fails_clearly(tmp_path):
    base = [*TINY_VIT, "model.pretrained=false", "model.num_classes=10"]
    assert (run(compose_run(*base), tmp_path / "source").status == "complete").all()
    summary = run(compose_run(*base, "norm=bn"), tmp_path / "bn")
    assert (summary.status == "failed").all()
    assert "BatchNorm" in summary.message.iloc[0]


def test_timm_reads_the_hugging_face_cache_offline(tmp_path):
    import timm

    source = timm.create_model("vit_tiny_patch16_224", img_size=32)
    repo = tmp_path / "hf_hub/models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("0123abc")
    (repo / "snapshots/0123abc").mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots/0123abc/model.safetensors"))
    model = instantiate(compose_run(*TINY_VIT).model)
    assert torch.equal(model.net.head.weight, source.head.weight)
    assert "state_dict" not in model.net.pretrained_cfg  # no second copy of the weights
    bad = tmp_path / "bad.pt"
    torch.save({**source.state_dict(), "extra.weight": torch.zeros(1)}, bad)
    with pytest.raises(ck.CheckpointMismatchError, match="extra.weight"):
        zoo.load_timm("vit_tiny_patch16_224", checkpoint=bad, kwargs={"img_size": 32})


def test_timm_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="not a timm model"):
        zoo.load_timm("no_such_net_42", pretrained=False)


def test_model_presets_default_to_pretrained_weights():
    for preset in ("wrn28_10", "resnext29_augmix", "resnet50", "torchvision", "timm"):
        node = compose_run(f"model={preset}").model
        assert node.pretrained is True and node.checkpoint is None and node.sha256 is None
        assert "model_dir" in node
    assert math.isclose(compose_run("model=wrn28_10").model.num_classes, 10)


def test_cli_run_wrn28_10_with_a_robustbench_checkpoint_on_cifar10c_files(tmp_path, wrn):
    """The issue's acceptance command, end to end: a checkpoint file in RobustBench's format
    (``{'state_dict': {'module.<key>': ...}}``) and CIFAR-10-C files in the published layout."""
    import subprocess
    import sys

    import pandas as pd

    from .c_fixtures import write_cifar_c

    rand_bn_stats(wrn)
    checkpoint = tmp_path / "Standard.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in wrn.state_dict().items()}}, checkpoint)
    write_cifar_c(tmp_path / "data" / "CIFAR-10-C", ["gaussian_noise"], filled=16)
    out = subprocess.run(
        [sys.executable, "-m", "ttabench.cli", "run", "model=wrn28_10",
         f"model.checkpoint={checkpoint}", "dataset=cifar10c", f"dataset.root={tmp_path}/data",
         "dataset.corruptions=[gaussian_noise]", "dataset.n_per_domain=16", "method=bn",
         "stream.batch_size=8", "progress=false", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert summary["model"].iloc[0] == "wrn28_10" and summary["dataset"].iloc[0] == "cifar10c"
    assert summary["n"].iloc[-1] == 16 and (summary["status"] == "complete").all()
    assert "source=files" in summary["provenance"].iloc[0]


# --- penultimate features (LAME's affinity, prototype methods) --------------------------------


@pytest.mark.parametrize(
    ("preset", "side"),
    [
        (["model=embedded"], 32),
        (["model=wrn28_10", "model.pretrained=false"], 32),
        (["model=resnext29_augmix", "model.pretrained=false"], 32),
        (["model=resnet50", "model.pretrained=false"], 64),
        (["model=torchvision", "model.name=resnet18", "model.pretrained=false"], 64),
        (["model=timm", "model.name=resnet18", "model.pretrained=false"], 64),
        ([*TINY_VIT, "model.pretrained=false", "model.num_classes=10"], 32),
    ],
)
def test_every_zoo_model_gives_penultimate_features_the_classifier_maps_to_its_logits(preset, side):
    model = instantiate(compose_run(*preset).model).eval()
    head = classifier_of(model)
    x = torch.rand(2, 3, side, side)
    with torch.no_grad():
        feats, logits = features_and_logits(model, x)
        assert feats.shape == (2, head.in_features) and logits.shape[1] == head.out_features
        assert torch.allclose(head(feats), logits, atol=1e-4)
        assert torch.allclose(logits, model(x), atol=1e-5), "one ordinary forward pass"


def test_a_model_without_a_linear_classifier_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        classifier_of(net)
