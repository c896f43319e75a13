"""How the stream's batches reach a method: the evaluation protocol (config group ``protocol``).

The runner hands every batch to the protocol, which calls the method (once, several times, after
a reset, or not at all) and returns the logits to score. ``online`` is the protocol of every TTA
paper's main table: one call per batch, predictions scored as they are made. A protocol that
reads the batch's labels says so (``uses_labels``); every summary row carries that flag and
``ttabench compare`` marks such results, since an online user has no labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ttabench.methods.base import TTAMethod


@dataclass
class Answer:
    """The logits to score for one batch, and how the protocol got them.

    Attributes:
        logits: (B, C), scored by the runner.
        adapted: False when the method did not see the batch (``compute_aware`` answered it
            with the source model while the method was busy).
        selected_step: The method call whose prediction was kept (``oracle_selection``; 0 for
            one call).
        relative_cost: The batch's cost relative to one forward of the source model, where
            the protocol measures it (``compute_aware``); None elsewhere.
        overhead_seconds: Time the protocol spent on the batch that is not the method's (the
            forward ``compute_aware`` times as its unit): left out of ``seconds``.
        plain: The logits are the plain network's, not the method's output (a skipped batch):
            the criteria read them with a softmax, not ``method.log_probabilities``.
    """

    logits: torch.Tensor
    adapted: bool = True
    selected_step: int = 0
    relative_cost: float | None = None
    overhead_seconds: float = 0.0
    plain: bool = False


class Protocol:
    """``protocol(method, x, y) -> Answer`` once per batch of the stream, in order.

    ``start`` is called once before the stream with the method and, for protocols that set
    ``needs_source_model``, the non-adapted source model (eval mode, no gradients).
    """

    uses_labels: ClassVar[bool] = False
    needs_source_model: bool = False

    def start(self, method: TTAMethod, source_model: nn.Module | None = None) -> None:
        """Called once before the first batch."""

    def reset(self) -> None:
        """Called where the stream resets the method (before each domain of ``single``)."""

    def __call__(self, method: TTAMethod, x: torch.Tensor, y: torch.Tensor | None) -> Answer:
        raise NotImplementedError


class Online(Protocol):
    """The standard online protocol: the method predicts and adapts once per batch; the state it
    reaches is carried to the next batch (resets only where the stream's schedule says)."""

    def __call__(self, method: TTAMethod, x: torch.Tensor, y: torch.Tensor | None) -> Answer:
        return Answer(method(x))


class Episodic(Protocol):
    """TTAB's episodic protocol (MEMO-style): the method is reset to the source before every
    batch, so each batch is adapted on alone and nothing is carried over. Equal to a freshly
    built method per batch (reset also restarts the method's random streams)."""

    def __call__(self, method: TTAMethod, x: torch.Tensor, y: torch.Tensor | None) -> Answer:
        method.reset()
        return Answer(method(x))
