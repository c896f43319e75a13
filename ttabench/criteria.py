"""Label-free criteria of a batch's predictions, logged per batch so hyperparameters can be chosen
without labels (Cygert et al., "Realistic Evaluation of Test-Time Adaptation: Unsupervised
Hyperparameter Selection", 2024; their ``utils.py::get_accuracy`` computes them on every batch).

- ``entropy``: mean Shannon entropy (nats) of the softmax predictions; lower is better.
- ``snd``: soft neighbourhood density (Saito et al., ICCV 2021, Eq. 1-3): the softmax
  predictions are L2-normalised, their cosine similarities to the other samples of the batch
  (self excluded) softmaxed per row at temperature 0.05, and SND is the mean entropy of those
  rows; higher is better (predictions that form dense neighbourhoods). Needs two samples; NaN
  for a batch of one. Saito's features are the softmax outputs, as here (Cygert's code passes
  logits).
- ``consistency`` (run key ``consistency=true``): mean KL(p(x) || p(v(x))) between the scored
  prediction and the current state's prediction, without adapting, of a soft CoTTA view v(x)
  (Cygert et al.'s CON); lower is better. It costs one forward per batch.

Entropy and SND read only the logits the runner scores. Non-finite rows are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SND_TEMPERATURE = 0.05  # Saito et al.'s tau
#: criterion -> True if larger values are better
CRITERIA = {"entropy": False, "snd": True, "consistency": False}


@torch.no_grad()
def label_free_criteria(
    logits: torch.Tensor, view_logits: torch.Tensor | None = None
) -> dict[str, float]:
    """The criteria of one batch (NaN when no row is finite; consistency NaN without
    ``view_logits``, the predictions of the augmented view)."""
    logits = logits.detach().float()
    finite = torch.isfinite(logits).all(dim=1)
    if view_logits is not None:
        view_logits = view_logits.detach().float()
        finite &= torch.isfinite(view_logits).all(dim=1)
    if not finite.any():
        return {name: float("nan") for name in CRITERIA}
    log_p = logits[finite].log_softmax(dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
    row = {"entropy": float(entropy), "snd": soft_neighbourhood_density(log_p)}
    row["consistency"] = float("nan")
    if view_logits is not None:
        log_q = view_logits[finite].log_softmax(dim=1)
        row["consistency"] = float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean())
    return {name: round(value, 6) for name, value in row.items()}


def soft_neighbourhood_density(log_p: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """SND of predictions given as log-probabilities (n, C); NaN for n < 2."""
    n = log_p.shape[0]
    if n < 2:
        return float("nan")
    features = F.normalize(log_p.exp(), dim=1)
    similarity = features @ features.T
    others = similarity[~torch.eye(n, dtype=torch.bool, device=similarity.device)].view(n, n - 1)
    neighbours = (others / temperature).log_softmax(dim=1)
    return float(-(neighbours.exp() * neighbours).sum(dim=1).mean())
