"""``method=rotta``: robust test-time adaptation for practical (correlated, changing) streams.

Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios", CVPR 2023 (arXiv 2303.13899),
section 3; official code BIT-DA/RoTTA ``core/adapter/rotta.py``, ``core/utils/memory.py``,
``core/utils/bn_layers.py`` (specs/methods.md, section 6). Three parts:

- Robust BN (section 3.2): the norm. Official: RBN (``norm=rbn``, the YAML default); any other
  norm takes its place (``method=rotta norm=unmix``, as the UnMix-TNS paper runs it). The
  layers' statistics move only on the memory batch: RoTTA predicts in eval mode with ``adapt``
  off and runs its update in train mode with ``adapt`` on (plain BN and IABN move in train mode,
  the swapped-in norm layers with ``adapt``).
- Category-balanced sampling with timeliness and uncertainty (CSTU, section 3.3, Alg. 1): a
  memory of N = 64 samples, N / C per predicted class; see :class:`CSTUMemory`.
- Time-aware robust training (section 3.4, Eq. 8-9): every ``update_every`` samples (counted
  across batches, so mid-batch when B > 64) the teacher labels the memory, the student learns
  from a strong CoTTA view of it, each sample weighted by its age, L = mean_j w_j CE(teacher,
  student), w_j = exp(-a_j) / (1 + exp(-a_j)), a_j = age_j / N; then the teacher follows the
  student: theta_t = (1 - nu) theta_t + nu theta_s.

Per batch the teacher (the model's copy, with its own norm statistics) predicts x without
updating anything; that prediction is scored and gives each sample's pseudo-label and
uncertainty -sum p ln(p + 1e-6) for the memory. Batch size 1 works (official ``ptta.py`` skips
one-sample batches; here they are adapted on like any other).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ttabench.methods.augment import CoTTAAugment
from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import ema_update, norm_affine, soft_cross_entropy
from ttabench.norms.base import set_adapt


class CSTUMemory:
    """RoTTA's category-balanced memory (official ``CSTU``), items kept per predicted class.

    An item's score is lambda_t / (1 + exp(-age / N)) + lambda_u u / ln C (high: old or
    uncertain, first to go). Adding (x, y, u) with score s(0, u):

    - class y below its quota N / C: stored if the memory has room; else the highest-scoring
      item of the majority classes (ties: the later one) is evicted if it scores more than the
      new item, otherwise the new item is dropped;
    - class y at or above its quota (even with room): the same against class y's own items.

    After every attempt all stored items (the new one too) age by 1.
    """

    def __init__(
        self, capacity: int, num_classes: int, lambda_t: float = 1.0, lambda_u: float = 1.0
    ) -> None:
        self.capacity, self.num_classes = capacity, num_classes
        self.quota = capacity / num_classes
        self.lambda_t, self.lambda_u = lambda_t, lambda_u
        self.items: list[list[list]] = [[] for _ in range(num_classes)]  # [x, u, age] per class

    def __len__(self) -> int:
        return sum(len(items) for items in self.items)

    def occupancy(self) -> list[int]:
        return [len(items) for items in self.items]

    def score(self, age: float, uncertainty: float) -> float:
        timeliness = self.lambda_t / (1 + math.exp(-age / self.capacity))
        return timeliness + self.lambda_u * uncertainty / math.log(self.num_classes)

    def add(self, x: torch.Tensor, label: int, uncertainty: float) -> bool:
        """Try to store ``x``; returns whether it was stored."""
        stored = self._make_room(label, self.score(0, uncertainty))
        if stored:
            self.items[label].append([x.clone(), uncertainty, 0])  # x may view the batch
        for items in self.items:
            for item in items:
                item[2] += 1
        return stored

    def _make_room(self, label: int, new_score: float) -> bool:
        if len(self.items[label]) < self.quota:
            if len(self) < self.capacity:
                return True
            counts = self.occupancy()
            top = max(counts)
            return self._evict([c for c, n in enumerate(counts) if n == top], new_score)
        return self._evict([label], new_score)

    def _evict(self, classes: list[int], new_score: float) -> bool:
        """Remove the highest-scoring item of ``classes`` if it scores more than the new one."""
        best = None
        for c in classes:
            for i, (_, uncertainty, age) in enumerate(self.items[c]):
                score = self.score(age, uncertainty)
                if best is None or score >= best[0]:
                    best = (score, c, i)
        if best is None:
            return True
        if best[0] > new_score:
            del self.items[best[1]][best[2]]
            return True
        return False

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored images in class order and their ages divided by N."""
        stored = [item for items in self.items for item in items]
        images = torch.stack([x for x, _, _ in stored])
        ages = torch.tensor([age / self.capacity for _, _, age in stored], device=images.device)
        return images, ages


class RoTTA(TTAMethod):
    """RoTTA: CSTU memory, teacher-student training on it, norm statistics moved by it.

    Args:
        memory_size: N, the memory's capacity (official 64).
        update_every: samples between updates (official 64, the memory size).
        nu: teacher EMA rate (official 0.001).
        lambda_t: weight of timeliness in the eviction score (official 1).
        lambda_u: weight of uncertainty in the eviction score (official 1).
    """

    state_attributes = ("memory", "seen")

    def __init__(
        self,
        model: nn.Module,
        memory_size: int = 64,
        update_every: int = 64,
        nu: float = 0.001,
        lambda_t: float = 1.0,
        lambda_u: float = 1.0,
        **base: Any,
    ) -> None:
        self.memory_size = knob(memory_size, "memory_size", int, low=1)
        self.update_every = knob(update_every, "update_every", int, low=1)
        self.nu = knob(nu, "nu", low=0.0, high=1.0)
        self.lambda_t = knob(lambda_t, "lambda_t", low=0.0)
        self.lambda_u = knob(lambda_u, "lambda_u", low=0.0)
        super().__init__(model, **base)

    def configure(self) -> None:
        super().configure()
        set_adapt(self.model, False)  # statistics move on the memory batch only

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "rotta")

    def prediction_model(self) -> nn.Module:
        return self.teacher

    def prepare(self) -> None:
        self.teacher = self.frozen_copy()
        self.augment = CoTTAAugment(self.random)
        self.reset_state()

    def reset_state(self) -> None:
        self.memory = CSTUMemory(
            self.memory_size, self.context.num_classes, self.lambda_t, self.lambda_u
        )
        self.seen = 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.teacher(x)
        probs = logits.softmax(1)
        uncertainty = -(probs * torch.log(probs + 1e-6)).sum(1)
        labels, uncertainties = probs.argmax(1).tolist(), uncertainty.tolist()
        for i, (label, u) in enumerate(zip(labels, uncertainties, strict=True)):
            self.memory.add(x[i], label, u)
            self.seen += 1
            if self.seen % self.update_every == 0:
                self.update()
        return logits

    def adapt_again(self, x: torch.Tensor) -> None:
        """One more step on the memory batch; ``x`` is in the memory already."""
        self.update()

    @torch.enable_grad()
    def update(self) -> None:
        """One step on the memory batch (Eq. 8-9), then the teacher's EMA."""
        images, ages = self.memory.batch()
        for net in (self.model, self.teacher):  # official: train mode; norm layers: adapt
            net.train()
            set_adapt(net, True)
        try:
            with torch.no_grad():
                teacher_logits = self.teacher(images)
            student_logits = self.model(self.augment(images))
        finally:
            for net in (self.model, self.teacher):
                net.eval()
                set_adapt(net, False)
        weights = torch.exp(-ages) / (1 + torch.exp(-ages))
        loss = (soft_cross_entropy(student_logits, teacher_logits) * weights).mean()
        self.optimizer.zero_grad()
        self.backward(loss, images.shape[0])
        self.optimizer.step()
        ema_update(
            list(self.teacher.parameters()), list(self.model.parameters()), 1 - self.nu, self.nu
        )
