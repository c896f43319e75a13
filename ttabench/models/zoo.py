"""Source-model presets (``configs/model/*.yaml``): RobustBench CIFAR models, torchvision, timm.

The standard TTA source models (Croce et al., "RobustBench", NeurIPS 2021 Datasets and
Benchmarks; the Tent/CoTTA/RMT protocol): CIFAR-10 ``Standard`` WRN-28-10, CIFAR-100
``Hendrycks2020AugMix_ResNeXt`` and ImageNet ``Standard_R50`` (torchvision ResNet-50
``IMAGENET1K_V1``), plus any torchvision or timm classifier by name. Every loader returns a
``NormalizedModel`` in eval mode taking images in [0, 1]: input normalisation belongs to the
model. RobustBench CIFAR models take [0, 1] as is (mean 0, std 1; the AugMix ResNeXt
normalises inside); torchvision models use their weights' transform; timm models use their
``pretrained_cfg`` mean/std, which avoids the ImageNet-statistics-for-ViT mistake reported
against SAR (mr-eggplant/SAR issue #5: timm's ViT-B/16 wants 0.5/0.5). Weights are found and
loaded by ``checkpoints`` (no network; see there for the search order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ttabench.models import checkpoints as ck
from ttabench.models.resnext import AugMixResNeXt
from ttabench.models.wide_resnet import WideResNet
from ttabench.models.wrapper import NormalizedModel

UNIT_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # RobustBench CIFAR: [0, 1] as is
PathLike = str | Path | None


def _robustbench_path(
    preset: str,
    dataset: str,
    name: str,
    checkpoint: PathLike,
    pretrained: bool,
    model_dir: PathLike,
) -> Path | None:
    # Resolved before the network is built, so a missing file is reported at once.
    return ck.resolve_checkpoint(
        f"model={preset} (RobustBench {dataset}/{ck.THREAT_MODEL}/{name})",
        ck.robustbench_candidates(dataset, name, model_dir),
        checkpoint,
        pretrained,
        hint=f"Download it (opt-in): ttabench download {preset} --model-dir DIR (or RobustBench: "
        f"robustbench.utils.load_model({name!r}, model_dir=DIR, dataset={dataset!r}, "
        "threat_model='corruptions')).",
    )


def load_wrn28_10(
    checkpoint: PathLike = None,
    pretrained: bool = True,
    sha256: str | None = None,
    num_classes: int = 10,
    model_dir: PathLike = None,
) -> NormalizedModel:
    """RobustBench CIFAR-10 ``Standard``: WRN-28-10, input [0, 1] unnormalised."""
    path = _robustbench_path("wrn28_10", "cifar10", "Standard", checkpoint, pretrained, model_dir)
    net = WideResNet(depth=28, widen_factor=10, num_classes=num_classes)
    if path is not None:
        ck.load_weights(net, path, sha256)
    return NormalizedModel(net, UNIT_MEAN, UNIT_STD).eval()


def load_resnext29_augmix(
    checkpoint: PathLike = None,
    pretrained: bool = True,
    sha256: str | None = None,
    num_classes: int = 100,
    model_dir: PathLike = None,
) -> NormalizedModel:
    """RobustBench CIFAR-100 ``Hendrycks2020AugMix_ResNeXt``: ResNeXt-29 (4 x 32d).

    The network normalises inside with ``(x - 0.5) / 0.5`` (buffers ``mu``/``sigma``, which
    the published checkpoint lacks: the one documented exception to strict key matching).
    """
    path = _robustbench_path(
        "resnext29_augmix",
        "cifar100",
        "Hendrycks2020AugMix_ResNeXt",
        checkpoint,
        pretrained,
        model_dir,
    )
    net = AugMixResNeXt(num_classes=num_classes)
    if path is not None:
        ck.load_weights(net, path, sha256, optional=AugMixResNeXt.OPTIONAL_KEYS)
    return NormalizedModel(net, UNIT_MEAN, UNIT_STD).eval()


def load_resnet50(
    checkpoint: PathLike = None,
    pretrained: bool = True,
    sha256: str | None = None,
    model_dir: PathLike = None,
) -> NormalizedModel:
    """RobustBench ImageNet ``Standard_R50`` = torchvision ResNet-50 ``IMAGENET1K_V1``."""
    return load_torchvision(
        "resnet50",
        weights="IMAGENET1K_V1",
        checkpoint=checkpoint,
        pretrained=pretrained,
        sha256=sha256,
        model_dir=model_dir,
        store_name="Standard_R50",
        preset="resnet50",
    )


def load_torchvision(
    name: str,
    weights: str = "DEFAULT",
    checkpoint: PathLike = None,
    pretrained: bool = True,
    sha256: str | None = None,
    num_classes: int | None = None,
    model_dir: PathLike = None,
    store_name: str | None = None,
    preset: str = "torchvision",
) -> NormalizedModel:
    """A torchvision classifier, e.g. ``name=resnet50 weights=IMAGENET1K_V1``.

    Args:
        name: a torchvision classification model (``torchvision.models.list_models``).
        weights: a member of the model's weights enum; ``DEFAULT`` is torchvision's default.
            It fixes the checkpoint file, the class count and the input mean/std.
        checkpoint: an explicit weights file, searched before anything else.
        pretrained: false gives a random initialisation (with the weights' mean/std).
        sha256: expected SHA-256 of the weights file (or a prefix of >= 8 hex digits).
        num_classes: the head size; default: the weights' categories.
        model_dir: searched as ``{model_dir}/imagenet/corruptions/{store_name or name}.pt``.
        store_name: the file stem in model directories (RobustBench's name).
        preset: the config name, for messages.
    """
    from torchvision import models

    if name not in models.list_models(module=models):
        raise ValueError(f"model.name={name!r} is not a torchvision classification model")
    enum = models.get_model_weights(name)
    if weights not in ("DEFAULT", *enum.__members__):
        raise ValueError(f"model.weights={weights!r}: {name} has {list(enum.__members__)}")
    spec = getattr(enum, weights)
    transform = spec.transforms()
    path = ck.resolve_checkpoint(
        f"model={preset} ({name}, {spec})",
        [
            *ck.robustbench_candidates("imagenet", store_name or name, model_dir),
            ck.torch_hub_candidate(spec.url),
        ],
        checkpoint,
        pretrained,
        hint=(
            "Download it (opt-in): ttabench download resnet50 --model-dir DIR. "
            if preset == "resnet50"
            else ""
        )
        + f"torchvision downloads it with models.get_model({name!r}, weights={str(spec)!r}) "
        "(needs network; the file lands in the torch hub cache above).",
    )
    net = models.get_model(
        name, weights=None, num_classes=num_classes or len(spec.meta["categories"])
    )
    if path is not None:
        ck.verify_sha256(path, sha256)
        state_dict = ck.read_state_dict(path)
        if name.startswith("densenet"):
            state_dict = _densenet_legacy_keys(state_dict)
        ck.load_strict(net, state_dict, path)
    return NormalizedModel(net, transform.mean, transform.std).eval()


def _densenet_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision's DenseNet files predate the module names ("norm.1" -> "norm1");
    # torchvision.models.densenet._load_state_dict renames them the same way.
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )
    return {
        (f"{m.group(1)}{m.group(2)}" if (m := pattern.match(k)) else k): v
        for k, v in state_dict.items()
    }


def load_timm(
    name: str,
    checkpoint: PathLike = None,
    pretrained: bool = True,
    sha256: str | None = None,
    num_classes: int | None = None,
    model_dir: PathLike = None,
    kwargs: Mapping[str, Any] | None = None,
) -> NormalizedModel:
    """Any timm model by name (``arch`` or ``arch.tag``), weights found offline.

    Searched: ``checkpoint``; ``{model_dir}/imagenet/corruptions/{name}.pt`` (and the other
    model directories); the Hugging Face cache of the tag's ``hf_hub_id``; the torch hub cache
    of its ``url``. The file is read here (``weights_only``/safetensors) and handed to timm as
    a state dict, so timm applies its own key filter and strict load and never goes online.

    Args:
        name: a timm model name, e.g. ``vit_base_patch16_224.augreg2_in21k_ft_in1k``.
        kwargs: extra ``timm.create_model`` arguments (e.g. ``img_size``, ``drop_path_rate``).
        num_classes: a different head size (timm then drops the pretrained classifier).
        checkpoint, pretrained, sha256, model_dir: as for ``load_torchvision``.
    """
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise ValueError(f"model.name={name!r} is not a timm model (see timm.list_models())")
    cfg = get_pretrained_cfg(name)
    candidates = ck.robustbench_candidates("imagenet", name, model_dir)
    if cfg is not None and cfg.hf_hub_id:
        filenames = _hf_filenames(cfg.hf_hub_filename or "pytorch_model.bin")
        candidates += ck.hf_cache_candidates(cfg.hf_hub_id, filenames)
    if cfg is not None and cfg.url:
        candidates.append(ck.torch_hub_candidate(cfg.url))
    path = ck.resolve_checkpoint(
        f"model=timm ({name})",
        candidates,
        checkpoint,
        pretrained,
        hint=f"timm downloads it with timm.create_model({name!r}, pretrained=True) (needs "
        "network; the file lands in the Hugging Face cache above).",
    )
    # Hydra passes a DictConfig; timm wants plain values (e.g. a list, not a ListConfig).
    create_kwargs = OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else kwargs
    create_kwargs = dict(create_kwargs or {})
    if num_classes is not None:
        create_kwargs["num_classes"] = num_classes
    overlay = None
    if path is not None:
        ck.verify_sha256(path, sha256)
        if path.suffix == ".npz":  # JAX/Flax ViT weights: only timm's own loader reads them
            overlay = dict(file=str(path), custom_load=True)
        else:
            overlay = dict(state_dict=ck.read_state_dict(path))
    try:
        model = timm.create_model(
            name, pretrained=path is not None, pretrained_cfg_overlay=overlay, **create_kwargs
        )
    except RuntimeError as exc:
        if path is None or "state_dict" not in str(exc):
            raise
        raise ck.CheckpointMismatchError(f"{path} does not match timm {name}: {exc}") from exc
    model.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
    # timm's resolve_data_config falls back to the ImageNet statistics the same way.
    mean = model.pretrained_cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)
    std = model.pretrained_cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    return NormalizedModel(model, mean, std).eval()


def _hf_filenames(filename: str) -> list[str]:
    """The hub file and, first, its safetensors twin: the order timm's hub loader tries."""
    if filename.endswith(".safetensors"):
        return [filename]
    twins = {
        "pytorch_model.bin": "model.safetensors",
        "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
    }
    return [twins.get(filename, filename.removesuffix(".bin") + ".safetensors"), filename]
