"""``protocol=oracle_selection``: TTAB's oracle model selection (Zhao et al., "On Pitfalls of
Test-Time Adaptation", ICML 2023, Sec. 4 and ``ttab/model_selection/oracle_model_selection.py``).

Per batch the method takes ``n_steps`` adaptation steps on it: its own call (which predicts,
stores the batch in a memory, and adapts), then ``n_steps - 1`` calls of ``adapt_again`` (a
gradient step on the batch; a memory method's step on its memory, the batch stored once, as
TTAB's NOTE). After each step the state's prediction of the batch (``predict``: no adaptation,
no statistics moved; TTAB scores each saved state with a plain forward) is scored **with the
batch's labels**; the best state (highest accuracy; a tie goes to the lower cross-entropy, then
to the earlier step) answers and is the state the stream goes on from (TTAB restores its
optimizer too). The unadapted state is not a candidate, so the oracle can even do worse than
the online protocol (which scores the prediction made before adapting). No online user has
the labels: every table marks these results (``uses_labels``).

``episodic=true`` resets before every batch (TTAB's oracle experiments run episodic, 10 steps
on CIFAR-10-C).
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
        method(x)  # step 1, the method's own call: its prediction from before it is no candidate
        best: tuple[tuple[int, float], int, torch.Tensor, dict[str, Any] | None] | None = None
        for step in range(1, self.n_steps + 1):
            if step > 1:
                method.adapt_again(x)
            logits = method.predict(x)
            score = _score(method.log_probabilities(logits), y)
            if best is None or score > best[0]:
                best = (score, step, logits, method.snapshot() if step < self.n_steps else None)
        assert best is not None
        _, step, logits, state = best
        if state is not None:  # an earlier state won: go back to it
            method.restore(state)
        return Answer(logits, selected_step=step)


def _score(log_probs: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(correct, -cross-entropy): larger is better; non-finite rows are wrong and lose ties.
    Outliers (label -1) have no class to be right about: only the test samples are scored."""
    log_probs = log_probs.detach().float()
    finite = torch.isfinite(log_probs).all(dim=1)
    correct = int(((log_probs.argmax(dim=1) == y) & finite).sum())
    loss = float(F.nll_loss(log_probs, y, ignore_index=-1))
    return correct, -loss if math.isfinite(loss) else -math.inf
