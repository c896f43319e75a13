"""``method=note``: instance-aware BN and a prediction-balanced memory for temporally correlated
streams.

Gong et al., "NOTE: Robust Continual Test-time Adaptation Against Temporal Correlation",
NeurIPS 2022 (arXiv 2208.05117), section 3; official code TaesikGong/NOTE ``learner/note.py``,
``utils/memory.py``, ``utils/iabn.py``, ``tta.sh`` (specs/methods.md, section 7). Per sample t,
in stream order:

1. Predict x_t alone in eval mode (running statistics; the scored output, from before any
   update t triggers); its argmax is the pseudo-label under which x_t enters the memory.
2. PBRS (prediction-balanced reservoir sampling, section 3.2; :class:`PBRSMemory`).
3. Every ``update_every`` samples (counted across batches): train mode on the memory batch,
   which moves the running statistics (momentum ``bn_momentum``), L = mean over the batch and
   classes of -p ln(p + 1e-6) (``HLoss``, temperature 1), one optimizer step; back to eval.

The norm axis decides the normalisation layers (docs: README "NOTE's three variants"):

- ``model=embedded_iabn`` (IABN in the source model's training, as NOTE's official models):
  the official protocol; ``norm=iabn`` (the YAML default) keeps its layers.
- a standard BN model with ``norm=iabn`` (the default): BN converted to IABN at load time, the
  conversion UnMix-TNS's ``note.py`` applies to RobustBench models (its other settings differ:
  ``predict=batch``, memory and update every 16, SGD 1e-5, no skip threshold);
- ``norm=source``: plain BN with running statistics, the normalisation of TTAB's NOTE
  (``iabn: False``; TTAB also uses SGD);
- any other norm (``norm=unmix``): its layers take BN's place, and their statistics move on the
  memory batch only (the norm contract's ``adapt`` switch; off while predicting).

``predict=sample`` (official) scores each sample alone; where the layers make a prediction
independent of the rest of the batch (BN/IABN with running statistics, LN, GN) the samples up to
the next update go through in one forward, which gives the same outputs. ``predict=batch``
scores the whole test batch in one eval-mode forward before its updates (UnMix-TNS's
``note.py``). Differences from the official code: the stream is not cut to a multiple of
``update_every`` (NOTE scores 9,984 of 10,000); the memory batch is not shuffled (statistics and
the mean loss do not depend on its order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import norm_affine
from ttabench.norms.base import NormLayer, set_adapt

PREDICT = ("sample", "batch")


class PBRSMemory:
    """NOTE's prediction-balanced reservoir (official ``PBRS``).

    n_c counts the samples seen with pseudo-label c. Adding one of class c when the memory is
    full: if c is not among the classes of maximal occupancy, a random item of a random such
    class makes room; otherwise a random item of class c is replaced with probability
    m_c / n_c (m_c: its items in memory), else the new sample is dropped.
    """

    def __init__(self, capacity: int, num_classes: int, generator: torch.Generator) -> None:
        self.capacity, self.generator = capacity, generator
        self.items: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
        self.seen = [0] * num_classes

    def __len__(self) -> int:
        return sum(len(items) for items in self.items)

    def occupancy(self) -> list[int]:
        return [len(items) for items in self.items]

    def add(self, x: torch.Tensor, label: int) -> bool:
        """Offer ``x`` with pseudo-label ``label``; returns whether it was stored."""
        self.seen[label] += 1
        if len(self) >= self.capacity and not self._make_room(label):
            return False
        self.items[label].append(x.clone())  # x may view the batch
        return True

    def _make_room(self, label: int) -> bool:
        counts = self.occupancy()
        top = max(counts)
        largest = [c for c, n in enumerate(counts) if n == top]
        if label not in largest:
            victim = largest[self._randint(len(largest))]
        elif self._uniform() <= counts[label] / self.seen[label]:
            victim = label
        else:
            return False
        del self.items[victim][self._randint(len(self.items[victim]))]
        return True

    def batch(self) -> torch.Tensor:
        return torch.stack([x for items in self.items for x in items])

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.generator))

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))


class NOTE(TTAMethod):
    """NOTE.

    Args:
        memory_size: PBRS capacity (official 64).
        update_every: samples between updates (official 64).
        bn_momentum: momentum of the BatchNorm/IABN running statistics (official 0.01); the
            swapped-in norms (rbn, ema, unmix) keep their own rates (``norm.*``).
        predict: ``sample`` (official) or ``batch`` (UnMix-TNS's ``note.py``).
    """

    state_attributes = ("memory", "seen")

    def __init__(
        self,
        model: nn.Module,
        memory_size: int = 64,
        update_every: int = 64,
        bn_momentum: float = 0.01,
        predict: str = "sample",
        **base: Any,
    ) -> None:
        if predict not in PREDICT:
            raise ValueError(f"method.predict={predict!r} is unknown; valid: {', '.join(PREDICT)}")
        self.memory_size = knob(memory_size, "memory_size", int, low=1)
        self.update_every = knob(update_every, "update_every", int, low=1)
        self.bn_momentum = knob(bn_momentum, "bn_momentum", low=0.0, high=1.0)
        self.predict_mode = predict
        super().__init__(model, **base)

    def configure(self) -> None:
        super().configure()
        for module in self.model.modules():
            if isinstance(module, _BatchNorm):
                module.momentum = self.bn_momentum
        set_adapt(self.model, False)  # a swapped-in norm moves on the memory batch only
        self.sample_independent = _sample_independent(self.model)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "note")

    def prepare(self) -> None:
        self.reset_state()

    def reset_state(self) -> None:
        self.memory = PBRSMemory(self.memory_size, self.context.num_classes, self.random.host)
        self.seen = 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.predict_mode == "batch":
            logits = self.model(x)
            self._remember(x, logits.argmax(1).tolist())
            return logits
        outputs, start = [], 0
        while start < x.shape[0]:  # the samples up to the next update share the model's state
            end = min(x.shape[0], start + self.update_every - self.seen % self.update_every)
            logits = self._predict(x[start:end])
            outputs.append(logits)
            self._remember(x[start:end], logits.argmax(1).tolist())
            start = end
        return torch.cat(outputs)

    def adapt_again(self, x: torch.Tensor) -> None:
        """One more step on the memory batch; ``x`` is in the memory already (TTAB's NOTE)."""
        self.update()

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample alone (in one forward where that gives the same outputs)."""
        if self.sample_independent:
            return self.model(x)
        return torch.cat([self.model(x[i : i + 1]) for i in range(x.shape[0])])

    def _remember(self, x: torch.Tensor, labels: list[int]) -> None:
        for i, label in enumerate(labels):
            self.memory.add(x[i], label)
            self.seen += 1
            if self.seen % self.update_every == 0:
                self.update()

    @torch.enable_grad()
    def update(self) -> None:
        """One step on the memory batch in train mode (which moves the statistics)."""
        images = self.memory.batch()
        self.model.train()
        set_adapt(self.model, True)
        try:
            probs = self.model(images).softmax(1)
        finally:
            self.model.eval()
            set_adapt(self.model, False)
        loss = -(probs * torch.log(probs + 1e-6)).mean()
        self.optimizer.zero_grad()
        self.backward(loss, images.shape[0])
        self.optimizer.step()


def _sample_independent(model: nn.Module) -> bool:
    """Whether an eval-mode forward (``adapt`` off) treats each sample on its own: no
    BatchNorm without running statistics (test-batch statistics) and every swapped-in norm
    layer ``per_sample`` (UnMix-TNS; RBN and EMA while not adapting; not alpha-BN)."""
    for module in model.modules():
        if isinstance(module, NormLayer) and not module.per_sample:
            return False
        if isinstance(module, _BatchNorm) and module.running_mean is None:
            return False
    return True
