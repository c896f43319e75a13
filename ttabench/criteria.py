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

Both read only the logits the runner scores: they cost no forward. Non-finite rows are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SND_TEMPERATURE = 0.05  # Saito et al.'s tau
#: criterion -> True if larger values are better
CRITERIA = {"entropy": False, "snd": True}


@torch.no_grad()
def label_free_criteria(logits: torch.Tensor) -> dict[str, float]:
    """``{"entropy": ..., "snd": ...}`` of one batch (NaN when no row is finite)."""
    logits = logits.detach().float()
    logits = logits[torch.isfinite(logits).all(dim=1)]
    if not len(logits):
        return {name: float("nan") for name in CRITERIA}
    log_p = logits.log_softmax(dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
    return {"entropy": round(float(entropy), 6), "snd": round(soft_neighbourhood_density(log_p), 6)}


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
