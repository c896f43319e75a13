"""Pieces shared by the entropy-minimisation family (TENT, ETA/EATA, SAR, DeYO) and the
teacher-student methods (CoTTA, RoTTA, ROID).

Kept here once so each method file reads as its paper's procedure: the Shannon entropy of the
softmax, margins in units of ln C, and the norm-affine parameters they train, found through the
norm contract (``ttabench.norms.base.norm_parameters``), so ``method=tent norm=unmix`` trains
UnMix-TNS's affine parameters and ``norm=bn`` the BatchNorm ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ttabench.methods.base import knob
from ttabench.norms.base import NormLayer, norm_parameters


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) per row: ``-(softmax(z) * log_softmax(z)).sum(1)`` (TENT's form)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def ln_c_fraction(fraction: float, key: str) -> float:
    """A margin given as a fraction of ln C (EATA's E0 = 0.4 ln C), checked: it must lie in
    (0, 1] because the entropy never exceeds ln C."""
    value = knob(fraction, key)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"method.{key} is a fraction of ln C in (0, 1], got {fraction}")
    return value


def name_patterns(value: Sequence[str], key: str = "frozen") -> tuple[str, ...]:
    """A list of module-name patterns, checked (a bare string would be split into letters)."""
    if isinstance(value, str) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"method.{key} must be a list of module-name patterns, got {value!r}")
    return tuple(value)


def wrapped_name(name: str) -> str:
    """A parameter/module name as the official code sees it: without ttabench's input-
    normalisation wrapper (``net.layer4...`` -> ``layer4...``)."""
    return name.removeprefix("net.")


def norm_affine(
    model: nn.Module, method: str, exclude: Sequence[str] = (), bn2d_ln_gn_only: bool = False
) -> list[tuple[str, nn.Parameter]]:
    """The normalisation layers' affine parameters a method trains, or a clear error if there
    are none (e.g. ``affine=False`` layers).

    Args:
        exclude: drop parameters whose module name (as in the official code) contains any of
            these strings, or equals one without its trailing dot (SAR's ``norm.`` rule).
        bn2d_ln_gn_only: SAR/DeYO's ``collect_params`` takes BatchNorm2d, LayerNorm and
            GroupNorm (and the layers a norm swapped in for BatchNorm2d), not BatchNorm1d.
    """
    found = []
    for name, param in norm_parameters(model):
        module_name = wrapped_name(name.rsplit(".", 1)[0])
        if any(s in module_name or module_name == s.rstrip(".") for s in exclude):
            continue
        if bn2d_ln_gn_only and not _is_2d_ln_gn(model.get_submodule(name.rsplit(".", 1)[0])):
            continue
        found.append((name, param))
    if not found:
        raise ValueError(
            f"method={method} trains the affine parameters of normalisation layers, but this "
            "model (under this norm) has none to train (affine=False, or no BN/LN/GN layer)"
        )
    return found


def sam_ascent(
    params: list[nn.Parameter], rho: float, optimizer: torch.optim.Optimizer
) -> list[torch.Tensor]:
    """SAM's first step (Foret et al. 2021; ``sam.py`` of SAR and STAMP): theta += rho g /
    (||g||_2 + 1e-12), ||g|| over all trained tensors; returns the weights to restore before
    the base optimizer steps with the gradients of the second pass (cleared here for it)."""
    saved = [p.detach().clone() for p in params]
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        norm = torch.linalg.vector_norm(torch.stack([g.norm(2) for g in grads]), 2)
        scale = rho / (norm + 1e-12)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.add_(p.grad * scale)
    optimizer.zero_grad()
    return saved


def _is_2d_ln_gn(module: nn.Module) -> bool:
    if isinstance(module, NormLayer | nn.LayerNorm | nn.GroupNorm):
        return True
    return isinstance(module, _BatchNorm) and isinstance(module, nn.BatchNorm2d)


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """-sum_c softmax(target)_c ln softmax(logits)_c per row: the teacher-student loss of CoTTA
    and RoTTA (their ``softmax_entropy(x, x_ema)``)."""
    return -(target_logits.softmax(1) * logits.log_softmax(1)).sum(1)


def symmetric_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """0.5 CE(target -> logits) + 0.5 CE(logits -> target) per row (CoTTA's ImageNet loss,
    ROID's consistency loss; gradients flow into both arguments unless detached)."""
    return 0.5 * soft_cross_entropy(logits, target_logits) + 0.5 * soft_cross_entropy(
        target_logits, logits
    )


@torch.no_grad()
def ema_update(
    targets: Sequence[torch.Tensor],
    sources: Sequence[torch.Tensor],
    keep: float,
    mix: float | None = None,
) -> None:
    """``target = keep * target + mix * source`` in place, tensor by tensor, ``mix = 1 - keep``
    unless given (RoTTA writes ``(1 - nu) t + nu s``): a mean teacher's update, ROID's weight
    ensembling. In place, without temporaries; it may round one ulp away from the official
    ``keep * t + mix * s`` (scripts/diff_official_memory.py: logits within 2e-5)."""
    mix = 1 - keep if mix is None else mix
    for target, source in zip(targets, sources, strict=True):
        target.mul_(keep).add_(source, alpha=mix)
