"""``method=stamp``: outlier-aware adaptation with stable memory replay.

Yu et al., "STAMP: Outlier-Aware Test-Time Adaptation with Stable Memory Replay", ECCV 2024
(arXiv 2407.15773): Sec. 3.2 (reliable, class-balanced memory: Eq. 4-5), Sec. 3.3 (self-weighted
entropy minimisation on the memory with SAM: Eq. 6-7). Official code yuyongcan/STAMP
``src/methods/stamp.py``, ``setup.py``, ``data.py``; specs/methods.md, section 10.

Per batch (x_0: the batch; 15 augmented views, each drawn per image and forwarded as a batch
of its own):
  1. P = mean over x_0 and the views of softmax(f(view)); prediction argmax P, outlier score
     -H(P) (natural log, +1e-5 inside; higher = in-distribution).
  2. S0 = {i : argmax f(x_0)_i = argmax g(x_0)_i} with g the frozen source model under the same
     norm (skipped on ImageNet: ``agreement_filter``); S = {i in S0 : H(P_i) < alpha ln C}.
  3. x_0[S] go to the memory with the pseudo-labels argmax f(x_0)[S].
  4. If the memory holds anything: L = mean_j w_j H(f(m_j)), w = 64 softmax(-H) over the memory
     (not detached), a SAM step (rho 0.05) around SGD, the cosine learning rate advanced.
Memory (RBM, 64 items): per-class FIFO queues; when full, the oldest item of a class drawn at
random among the non-empty classes with the largest ``count``, an EMA (0.9) of the class sizes
updated at every read of the memory.

As officially: trained are the affine parameters of BatchNorm2d and LayerNorm outside
``layer4``/``conv5_x`` and ViT ``blocks.9-11``/``norm`` (GroupNorm is collected officially but never
given gradients); the learning rate follows CosineAnnealingLR(T_max) per memory update and rises
again after T_max (150 updates; a CIFAR domain with outliers has about 196). Views: the CoTTA
augmentation on CIFAR-10-style data (``augment: cotta``, also the embedded benchmark), random
crop (padding 4, zeros) + horizontal flip elsewhere (``crop_flip``); on ImageNet the official
pads the normalised image (zero = the mean colour), here the [0, 1] image (black).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ttabench.methods.augment import CoTTAAugment
from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import name_patterns, norm_affine, sam_ascent, softmax_entropy
from ttabench.norms.base import statistics_frozen

#: module names STAMP leaves frozen (official ``collect_params``)
STAMP_FROZEN = ("layer4", "conv5_x", "blocks.9", "blocks.10", "blocks.11", "norm.")
AUGMENTS = ("cotta", "crop_flip")


def _log(probs: torch.Tensor) -> torch.Tensor:
    """log P, finite where a class's mean probability underflows to 0 (its argmax and the
    outlier score, which adds 1e-5, are unchanged)."""
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class BalancedMemory:
    """STAMP's RBM: per-class FIFO queues of images under a total capacity."""

    def __init__(self, capacity: int, num_classes: int) -> None:
        self.capacity = capacity
        self.queues: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
        self.count = [0.0] * num_classes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, images: torch.Tensor, labels: list[int], host: torch.Generator) -> None:
        for image, label in zip(images, labels, strict=True):
            if self.size < self.capacity:
                self.size += 1
            else:
                self._evict(host)
            self.queues[label].append(image)

    def read(self) -> torch.Tensor:
        """Every stored image (class order); each class's count moves towards its size."""
        for c, queue in enumerate(self.queues):
            self.count[c] = 0.9 * self.count[c] + 0.1 * len(queue)
        return torch.stack([image for queue in self.queues for image in queue])

    def _evict(self, host: torch.Generator) -> None:
        filled = [c for c, queue in enumerate(self.queues) if queue]
        top = max(self.count[c] for c in filled)
        largest = [c for c in filled if self.count[c] == top]
        pick = largest[int(torch.randint(len(largest), (1,), generator=host))]
        self.queues[pick].pop(0)


class STAMP(TTAMethod):
    """STAMP (see the module docstring).

    Args:
        alpha: Entropy margin of the memory as a fraction of ln C (CIFAR-10-C 0.25).
        memory_size: Items in the memory, also the weights' scale (official 64).
        n_views: Augmented views per image (official 15, ``STAMP.NUM_AUG``).
        rho: SAM radius (official 0.05).
        t_max: Cosine schedule length in memory updates (150; ImageNet 750).
        agreement_filter: Keep only samples on which the model and the source agree (off on
            ImageNet, as officially).
        augment: ``cotta`` or ``crop_flip`` (module docstring).
        frozen: Module-name patterns whose affine parameters stay frozen.
    """

    state_attributes = ("memory", "updates")

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 0.25,
        memory_size: int = 64,
        n_views: int = 15,
        rho: float = 0.05,
        t_max: int = 150,
        agreement_filter: bool = True,
        augment: str = "cotta",
        frozen: tuple[str, ...] = STAMP_FROZEN,
        **base: Any,
    ) -> None:
        self.alpha = knob(alpha, "alpha", low=0.0)
        self.memory_size = knob(memory_size, "memory_size", int, low=1)
        self.n_views = knob(n_views, "n_views", int, low=0)
        self.rho = knob(rho, "rho", low=0.0)
        self.t_max = knob(t_max, "t_max", int, low=1)
        if not isinstance(agreement_filter, bool):
            raise ValueError(f"method.agreement_filter must be true or false: {agreement_filter!r}")
        self.agreement_filter = agreement_filter
        if augment not in AUGMENTS:
            raise ValueError(f"method.augment={augment!r}; valid: {', '.join(AUGMENTS)}")
        self.augment_kind = augment
        self.frozen = name_patterns(frozen)
        super().__init__(model, **base)
        self.memory = BalancedMemory(self.memory_size, self.context.num_classes)
        self.updates = 0
        self.cotta = CoTTAAugment(self.random)

    @property
    def margin(self) -> float:
        return self.alpha * self.ln_classes

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        pairs = norm_affine(self.model, "stamp", self.frozen, bn2d_ln_gn_only=True)
        return [
            (n, p)
            for n, p in pairs
            if not isinstance(self.model.get_submodule(n.rsplit(".", 1)[0]), nn.GroupNorm)
        ]

    def prepare(self) -> None:
        self.source = self.frozen_copy()  # the official ``norm_model``
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]

    def reset_state(self) -> None:
        self.memory = BalancedMemory(self.memory_size, self.context.num_classes)
        self.updates = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log P, the log of the mean prediction over the batch and its views."""
        with torch.no_grad():
            logits = self.model(x)
            probs = self._mean_probability(x, logits)
            keep = self._reliable(x, logits, probs)
            self.memory.add(x[keep], logits.argmax(1)[keep].tolist(), self.random.host)
        if len(self.memory):
            self._adapt()
        return _log(probs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The view mean without storing or adapting; the views' random draws and the norm's
        statistics are left as they were (a criterion's call must not change the run)."""
        state = self.random.get_state()
        try:
            with torch.no_grad(), statistics_frozen(self.model):
                return _log(self._mean_probability(x, self.model(x)))
        finally:
            self.random.set_state(state)

    def adapt_again(self, x: torch.Tensor) -> None:
        if len(self.memory):
            self._adapt()

    def log_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def outlier_score(self, log_probs: torch.Tensor, kind: str = "entropy") -> torch.Tensor:
        """-H(P) with the official +1e-5 inside the logarithm (``stamp.py`` ``entropy``)."""
        p = log_probs.float().exp()
        return (p * torch.log(p + 1e-5)).sum(dim=1)

    def _mean_probability(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        total = logits.float().softmax(1)
        for _ in range(self.n_views):
            total = total + self.model(self._view(x)).float().softmax(1)
        return total / (1 + self.n_views)

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        """One augmented view, drawn per image (the official ``NCropsTransform``)."""
        if self.augment_kind == "cotta":
            return torch.cat([self.cotta(x[i : i + 1]) for i in range(len(x))])
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (4, 4, 4, 4))
        host = self.random.host
        out = torch.empty_like(x)
        for i in range(len(x)):
            top, left = (int(v) for v in torch.randint(9, (2,), generator=host))
            crop = padded[i, :, top : top + height, left : left + width]
            out[i] = crop.flip(-1) if float(torch.rand((), generator=host)) < 0.5 else crop
        return out

    def _reliable(self, x: torch.Tensor, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        entropy = -(probs * torch.log(probs + 1e-5)).sum(1)
        keep = entropy < self.margin
        if self.agreement_filter:
            keep &= logits.argmax(1) == self.source(x).argmax(1)
        return torch.nonzero(keep).flatten()

    def _adapt(self) -> None:
        """Self-weighted entropy on the memory, one SAM step, the cosine schedule advanced."""
        lr_scale = (1 + math.cos(math.pi * self.updates / self.t_max)) / 2
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * lr_scale
        data = self.memory.read()
        with torch.enable_grad():
            self.optimizer.zero_grad()
            self.backward(self._weighted_entropy(data), len(data))
            saved = sam_ascent(self.trained, self.rho, self.optimizer)
            self.backward(self._weighted_entropy(data), len(data))
            with torch.no_grad():
                for p, old in zip(self.trained, saved, strict=True):
                    p.copy_(old)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.updates += 1

    def _weighted_entropy(self, data: torch.Tensor) -> torch.Tensor:
        entropy = softmax_entropy(self.model(data))
        weight = torch.exp(-entropy)
        weight = weight / weight.sum() * self.memory_size
        return (entropy * weight).mean()
