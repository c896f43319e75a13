"""The ``norm`` interface: prepare a source model's BatchNorm layers for test time.

A norm is instantiated from ``configs/norm/<name>.yaml`` and applied once to the freshly loaded
model, before the method wraps it, so the method's ``reset`` restores the swapped layers' state
too (their buffers are part of the model's state dict).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class Norm:
    """Base class: ``apply(model)`` returns the model prepared for test time (in place)."""

    name = "norm"

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError


def replace_batchnorm(
    model: nn.Module,
    make_layer: Callable[[nn.Module], nn.Module],
    types: tuple[type[nn.Module], ...] = (nn.BatchNorm2d,),
) -> int:
    """Replace every module of ``types`` by ``make_layer(old)``, in place; return how many."""
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, types):
                setattr(parent, child_name, make_layer(child))
                count += 1
    return count


def require_batchnorm(count: int, norm: str) -> None:
    """A clear error for norms that act on BatchNorm layers when the model has none."""
    if count == 0:
        raise ValueError(
            f"norm={norm} acts on BatchNorm layers, but the model has none (e.g. a GroupNorm "
            "or LayerNorm network); use norm=source with a method that does not need BatchNorm"
        )
