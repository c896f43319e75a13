"""``method=deyo``: entropy minimisation on samples whose prediction depends on object shape.

Lee et al., "Entropy is not Enough for Test-Time Adaptation: From the Perspective of
Disentangled Factors", ICLR 2024 (openreview 9w3iw8wDuE): the Pseudo-Label Probability
Difference PLPD = p(y|x) - p(y|x') for a patch-shuffled view x' (Eq. 5), sample selection by
entropy and PLPD (Eq. 6) and the reweighting exp(E0 - H) + exp(PLPD) (Eq. 7-8). Official code
Jhyun17/DeYO ``methods/deyo.py``, ``config.py`` (specs/methods.md, section 8).

Per batch: z = f(x); S1 = {H < 0.5 ln C} (none: return z); x' = x[S1] with its 4 x 4 patches
permuted independently per image (after resizing the side to a multiple of 4, and back);
z' = f(x') without gradient (test-batch statistics of that view); y = argmax z; S2 = {i in S1 :
PLPD_i > tau} (none: return z); L = mean_{S2} (exp(E0 - H) + exp(PLPD)) H with E0 = 0.4 ln C;
one step. Trained: as SAR (norm affine outside ``layer4`` / ViT's last blocks). ``aug=pixel``
permutes pixels (one permutation for the batch), the paper's other view. The view is made from
images in [0, 1], before the model's input normalisation: resizing and permuting commute with
that per-channel affine map, so the view is the official one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import ln_c_fraction, name_patterns, norm_affine, softmax_entropy
from ttabench.methods.sar import SAR_FROZEN
from ttabench.norms.base import statistics_frozen

AUGMENTATIONS = ("patch", "pixel")


class DeYO(TTAMethod):
    """DeYO with PLPD filtering and entropy + PLPD reweighting.

    Args:
        margin: tau_ent of the entropy filter, fraction of ln C (official 0.5).
        margin_e0: E0 of the reweighting, fraction of ln C (official 0.4).
        plpd_threshold: tau_PLPD (official 0.2; 0.3 for mild ImageNet-C ResNet-50-BN).
        patch_len: patches per side of the shuffled view (official 4).
        aug: ``patch`` (official) or ``pixel``.
        reweight_ent, reweight_plpd: the two weighting terms (official both on).
        frozen: module-name patterns whose affine parameters stay frozen (as SAR).
    """

    def __init__(
        self,
        model: nn.Module,
        margin: float = 0.5,
        margin_e0: float = 0.4,
        plpd_threshold: float = 0.2,
        patch_len: int = 4,
        aug: str = "patch",
        reweight_ent: bool = True,
        reweight_plpd: bool = True,
        frozen: tuple[str, ...] = SAR_FROZEN,
        **base: Any,
    ) -> None:
        self.margin = ln_c_fraction(margin, "margin")
        self.margin_e0 = ln_c_fraction(margin_e0, "margin_e0")
        if aug not in AUGMENTATIONS:
            raise ValueError(f"method.aug={aug!r} is unknown; valid: {', '.join(AUGMENTATIONS)}")
        self.plpd_threshold = knob(plpd_threshold, "plpd_threshold", low=-1.0, high=1.0)
        self.patch_len, self.aug = knob(patch_len, "patch_len", int, low=1), aug
        self.reweight_ent, self.reweight_plpd = float(reweight_ent), float(reweight_plpd)
        self.frozen = name_patterns(frozen)
        super().__init__(model, **base)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "deyo", self.frozen, bn2d_ln_gn_only=True)

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        entropy = softmax_entropy(logits)
        keep = torch.nonzero(entropy < self.margin * self.ln_classes).flatten()
        if not len(keep):
            return logits.detach()
        probs = logits[keep].softmax(1)
        with torch.no_grad(), statistics_frozen(self.model):  # a made-up view: no stats update
            probs_view = self.model(self.shuffled_view(x[keep].detach())).softmax(1)
        pseudo = probs.argmax(1, keepdim=True)
        plpd = (probs.gather(1, pseudo) - probs_view.gather(1, pseudo)).flatten()
        keep2 = torch.nonzero(plpd > self.plpd_threshold).flatten()
        if not len(keep2):
            return logits.detach()
        chosen, plpd = entropy[keep][keep2], plpd[keep2].detach()
        if self.reweight_ent or self.reweight_plpd:
            e0 = self.margin_e0 * self.ln_classes
            weight = self.reweight_ent * torch.exp(e0 - chosen.detach())
            chosen = chosen * (weight + self.reweight_plpd * torch.exp(plpd))
        self.backward(chosen.mean(0), len(keep2))
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.detach()

    def shuffled_view(self, x: torch.Tensor) -> torch.Tensor:
        """DeYO's object-destroying view x' (patch or pixel shuffle)."""
        b, c, h, w = x.shape
        if self.aug == "pixel":
            perm = torch.randperm(h * w, generator=self.random.on(x.device), device=x.device)
            return x.flatten(2)[:, :, perm].view(b, c, h, w)
        n = self.patch_len
        side = (w // n) * n  # official: both sides from the width
        resized = x if (h, w) == (side, side) else _resize(x, side)
        patches = resized.view(b, c, n, side // n, n, side // n).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, n * n, c, side // n, side // n)
        noise = torch.rand(b, n * n, generator=self.random.on(x.device), device=x.device)
        order = torch.argsort(noise, dim=-1)
        patches = patches[torch.arange(b, device=x.device).unsqueeze(-1), order]
        out = patches.view(b, n, n, c, side // n, side // n).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(b, c, side, side)
        return out if (h, w) == (side, side) else _resize(out, w)


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """torchvision ``Resize((side, side))`` on a tensor batch (bilinear, antialiased)."""
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
