"""Penultimate features of any zoo model: the input of its final linear classifier.

LAME's affinity (Boudiaf et al., CVPR 2022: "backbone.out") and prototype methods such as T3A
need the features the classifier sees. Every zoo network ends in one linear layer (WRN ``fc``,
ResNeXt ``classifier``, ResNet-8/ResNet-50 ``fc``, timm's ``get_classifier()``), so instead of
splitting each architecture by hand, one forward pass records that layer's input with a hook:
the logits and features come from the same pass, at the cost of a single forward.
"""

from __future__ import annotations

import torch
from torch import nn


def classifier_of(model: nn.Module) -> nn.Module:
    """The final linear classifier: timm's ``get_classifier()`` if the network has one, else
    the last ``nn.Linear`` registered in the model."""
    for module in (model, getattr(model, "net", None)):
        getter = getattr(module, "get_classifier", None)
        if callable(getter) and isinstance(getter(), nn.Linear):
            return getter()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear classifier, so its penultimate features "
            "cannot be found (needed by feature-based methods such as LAME)"
        )
    return linears[-1]


def features_and_logits(
    model: nn.Module, x: torch.Tensor, classifier: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (B, D), logits (B, C))`` of one forward pass of ``model`` on ``x``."""
    head = classifier if classifier is not None else classifier_of(model)
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"the classifier {type(head).__name__} was not called in the forward")
    return seen[-1].flatten(1), logits
