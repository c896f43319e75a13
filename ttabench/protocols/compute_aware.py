"""``protocol=compute_aware``: online evaluation under a time budget (Alfarra et al., "Evaluation
of Test-Time Adaptation Under Computational Time Constraints", ICML 2024, Sec. 3; official
``utils/online_eval.py``).

The stream does not wait: it reveals eta batches per forward of the model (eta = 1: at the
model's own speed; eta = 0: never skips, as officially). After the method adapts on a batch at
relative cost C (its time over one plain forward of the model on that batch), the next
``ceil(C * eta) - 1`` batches arrive while it is busy: the most recent adapted state answers
them without adapting (``TTAMethod.plain_forward``; ``skipped: source``: the source model),
then the method takes the next batch and its cost is counted again. C = 1 is the
online protocol. The clock restarts where the method is reset (each domain of a ``single``
schedule: the official code evaluates each corruption on its own).

``cost``: ``measured`` (official: wall time of the method's call over the wall time of one
``plain_forward`` of the same batch, on this machine, so not reproducible to the bit; a measured C
less than 10 % above a whole number counts as that number, so that timing noise alone does not
make a method that costs one forward skip every other batch), ``passes`` (machine-independent:
forwarded plus twice the back-propagated samples, per sample: a backward costs about two
forwards) or a number (a fixed C for every batch).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ttabench.methods.base import TTAMethod, knob
from ttabench.protocols.base import Answer, Protocol

COSTS = ("measured", "passes")
NOISE = 0.1  # measured C within 10 % above a whole number counts as that number
SKIPPED = ("latest", "source")


class ComputeAware(Protocol):
    """Args:
    cost: ``measured``, ``passes`` or a fixed ratio > 0 (see the module docstring).
    eta: stream speed in batches per model forward (official default 1).
    skipped: who answers the batches the method misses: ``latest`` (official: the current
        state, without adapting) or ``source`` (the model before any adaptation).
    """

    def __init__(self, cost: str | float = "measured", eta: float = 1.0, skipped: str = "latest"):
        if cost not in COSTS:
            try:
                cost = knob(cost, "cost", low=0.0, group="protocol")
                if cost == 0 or not math.isfinite(cost):
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"protocol.cost must be {', '.join(COSTS)} or a number > 0, got {cost!r}"
                ) from None
        if skipped not in SKIPPED:
            raise ValueError(
                f"protocol.skipped={skipped!r} is unknown; valid: {', '.join(SKIPPED)}"
            )
        self.cost, self.skipped = cost, skipped
        self.eta = knob(eta, "eta", low=0.0, high=1e6, group="protocol")
        self.needs_source_model = skipped == "source"
        self.busy_for = 0  # batches still to arrive while the method is busy
        self.source_model: nn.Module | None = None

    def start(self, method: TTAMethod, source_model: nn.Module | None = None) -> None:
        self.busy_for, self.source_model = 0, source_model

    def reset(self) -> None:
        self.busy_for = 0

    def __call__(self, method: TTAMethod, x: torch.Tensor, y: torch.Tensor | None) -> Answer:
        if self.busy_for > 0:
            self.busy_for -= 1
            return Answer(self._answer_skipped(method, x), adapted=False, plain=True)
        forwards, backwards = method.forwards, method.backwards
        start = time.perf_counter()
        logits = method(x)
        overhead = 0.0
        if self.cost == "measured":
            _sync(x)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            method.plain_forward(x)  # the clock's unit; not the method's cost
            _sync(x)
            overhead = time.perf_counter() - start
            ratio = _snap(seconds / max(overhead, 1e-9))
            method.forwards -= len(x)
        elif self.cost == "passes":
            passes = (method.forwards - forwards) + 2 * (method.backwards - backwards)
            ratio = passes / len(x)
        else:
            ratio = float(self.cost)
        self.busy_for = max(0, math.ceil(ratio * self.eta - 1e-9) - 1)
        return Answer(logits, relative_cost=ratio, overhead_seconds=overhead)

    def _answer_skipped(self, method: TTAMethod, x: torch.Tensor) -> torch.Tensor:
        if self.skipped == "source":
            assert self.source_model is not None, "start() was not given the source model"
            with torch.no_grad():
                return self.source_model(x)
        return method.plain_forward(x)


def _snap(ratio: float) -> float:
    """A measured C less than NOISE above a whole number, as that number (timing noise)."""
    whole = math.floor(ratio)
    return float(whole) if whole >= 1 and ratio - whole < NOISE else ratio


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
