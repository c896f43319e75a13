"""``method=cotta``: a mean teacher with augmentation-averaged pseudo-labels and stochastic
restore, for continual test-time adaptation.

Wang et al., "Continual Test-Time Domain Adaptation", CVPR 2022 (arXiv 2203.13591), Eq. 1-6;
official code qinenergy/cotta ``cifar/cotta.py`` and ``imagenet/cotta.py`` (specs/methods.md,
section 5). Three copies of the model under its norm (official: test-batch statistics,
``norm=bn``): the student (every weight and bias trained), the teacher (an EMA of the student)
and the anchor (the frozen source). Per batch:

1. z_s = student(x); the anchor's confidence c = mean_i max_c softmax(anchor(x))_c (Eq. 4-5).
2. z_t = teacher(x); if c < ``ap``, z_t is replaced by the mean logits of the teacher over
   ``n_augment`` CoTTA views of x (Eq. 3; the views are computed only then, as in the official
   ImageNet code and the Doebler/Marsden port; the CIFAR code always runs them).
3. L = mean_i CE(softmax(z_t), z_s) (Eq. 1; ``symmetric``: the ImageNet loss); one step.
4. Teacher: theta_t = mt theta_t + (1 - mt) theta_s over all parameters (Eq. 2).
5. Stochastic restore: each trained weight element returns to its source value with
   probability ``rst`` (Eq. 6).

The scored output is z_t, the teacher's prediction from before this batch's updates. With a
stateful norm (unmix, rbn, ...) each copy keeps its own statistics, moved by its forward on x;
the augmented views do not move them. The model stays in eval mode where the official code
uses train mode: identical for BatchNorm networks under ``norm=bn``; it keeps dropout off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttabench.methods.augment import CoTTAAugment
from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import ema_update, soft_cross_entropy, symmetric_cross_entropy
from ttabench.norms.base import statistics_frozen


class CoTTA(TTAMethod):
    """CoTTA: student, EMA teacher and frozen anchor.

    Args:
        mt: teacher EMA weight alpha (official 0.999).
        rst: stochastic-restore probability p (CIFAR 0.01, ImageNet-C 0.001).
        ap: confidence threshold p_th of the anchor (CIFAR-10-C 0.92, CIFAR-100-C 0.72,
            ImageNet-C 0.1).
        n_augment: augmented views averaged by the teacher (official 32).
        symmetric: the symmetric cross-entropy of the official ImageNet code.
    """

    def __init__(
        self,
        model: nn.Module,
        mt: float = 0.999,
        rst: float = 0.01,
        ap: float = 0.92,
        n_augment: int = 32,
        symmetric: bool = False,
        **base: Any,
    ) -> None:
        self.mt = knob(mt, "mt", low=0.0, high=1.0)
        self.rst = knob(rst, "rst", low=0.0, high=1.0)
        self.ap = knob(ap, "ap", low=0.0, high=1.0)
        self.n_augment = knob(n_augment, "n_augment", int, low=1)
        self.symmetric = bool(symmetric)
        super().__init__(model, **base)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Every weight and bias (official ``collect_params``: all of them)."""
        found = [
            (name, p)
            for name, p in self.model.named_parameters()
            if name.rsplit(".", 1)[-1] in ("weight", "bias")
        ]
        if not found:
            raise ValueError("method=cotta trains weights and biases, but the model has none")
        return found

    def prediction_model(self) -> nn.Module:
        return self.teacher

    def prepare(self) -> None:
        self.teacher = self.frozen_copy()
        self.anchor = self.frozen_copy()
        self.augment = CoTTAAugment(self.random)
        # theta_source of the stochastic restore: the anchor's copies of the trained tensors.
        anchor_params = dict(self.anchor.named_parameters())
        self._source = [anchor_params[name] for name, _ in self.trainable()]

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        student_logits = self.model(x)
        with torch.no_grad():
            confidence = self.anchor(x).softmax(1).amax(1).mean()
            teacher_logits = self.teacher(x)
            if confidence < self.ap:  # one host sync per batch, as officially
                with statistics_frozen(self.teacher):
                    views = [self.teacher(self.augment(x)) for _ in range(self.n_augment)]
                teacher_logits = torch.stack(views).mean(0)
        if self.symmetric:
            loss = symmetric_cross_entropy(student_logits, teacher_logits).mean(0)
        else:
            loss = soft_cross_entropy(student_logits, teacher_logits).mean(0)
        self.backward(loss, x.shape[0])
        self.optimizer.step()
        self.optimizer.zero_grad()
        ema_update(list(self.teacher.parameters()), list(self.model.parameters()), self.mt)
        self.stochastic_restore()
        return teacher_logits

    @torch.no_grad()
    def stochastic_restore(self) -> None:
        """theta = M theta_source + (1 - M) theta, M ~ Bernoulli(rst) per element."""
        if self.rst == 0:
            return
        for param, source in zip(self.trained, self._source, strict=True):
            generator = self.random.on(param.device)
            mask = torch.rand(param.shape, generator=generator, device=param.device) < self.rst
            param.copy_(torch.where(mask, source, param))
