"""``protocol=oracle_selection``: TTAB's oracle model selection (Zhao et al., "On Pitfalls of
Test-Time Adaptation", ICML 2023, Sec. 4 and ``ttab/model_selection/oracle_model_selection.py``).

Per batch the method takes ``n_steps`` adaptation steps on it; after each, the adapted state's
prediction of the batch is scored **with the batch's labels**, and the best state (highest
accuracy; a tie goes to the lower cross-entropy, then to the earlier step) gives the batch's
prediction and is the state the stream goes on from (TTAB restores its optimizer too). The
unadapted state is not a candidate. This is an upper bound no online user can reach: every
table marks it (``uses_labels``).

A state's prediction is the method's own (a teacher's for RoTTA and CoTTA), obtained by calling
the method once more and going back: k steps + 1 calls, the last undone. ``episodic=true``
resets before every batch (TTAB's oracle experiments run episodic, 10 steps on CIFAR-10-C).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ttabench.methods.base import TTAMethod, knob
from ttabench.protocols.base import Answer, Protocol


class OracleSelection(Protocol):
    """Args:
    n_steps: adaptation steps per batch, each a candidate (TTAB's CIFAR-10-C oracle: 10).
    episodic: reset to the source before every batch (TTAB's oracle scripts: true).
    """

    uses_labels: ClassVar[bool] = True

    def __init__(self, n_steps: int = 10, episodic: bool = False) -> None:
        self.n_steps = knob(n_steps, "n_steps", int, low=1, group="protocol")
        if not isinstance(episodic, bool):
            raise ValueError(f"protocol.episodic must be true or false, got {episodic!r}")
        self.episodic = episodic

    def __call__(self, method: TTAMethod, x: torch.Tensor, y: torch.Tensor | None) -> Answer:
        if y is None:
            raise ValueError("protocol=oracle_selection needs the batch's labels")
        if self.episodic:
            method.reset()
        method(x)  # step 1: the prediction of the unadapted state is not a candidate
        best: tuple[tuple[int, float], int, torch.Tensor, dict[str, Any] | None] | None = None
        for step in range(1, self.n_steps + 1):
            state = method.snapshot()
            logits = method(x)  # the prediction of the state after `step` steps, and one more
            score = _score(logits, y)
            if best is None or score > best[0]:
                best = (score, step, logits, state)
        assert best is not None
        _, step, logits, state = best
        method.restore(state)  # undoes the last call (and every step after the chosen one)
        return Answer(logits, selected_step=step)


def _score(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(correct, -cross-entropy): larger is better; non-finite logits are wrong and lose ties."""
    logits = logits.detach().float()
    finite = torch.isfinite(logits).all(dim=1)
    correct = int(((logits.argmax(dim=1) == y) & finite).sum())
    loss = float(F.cross_entropy(logits, y))
    return correct, -loss if math.isfinite(loss) else -math.inf
