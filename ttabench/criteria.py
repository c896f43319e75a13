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
- ``consistency`` (run key ``consistency=true``): mean KL(p(x) || p(v(x))) between the
  current state's predictions, without adapting, of the batch and of a soft CoTTA view v(x)
  (Cygert et al.'s CON, after the batch's update; their code takes p(x) from the forward
  before the update, which adds how far the update moved the model); lower is better. It costs
  two forwards per batch.

Entropy and SND read only the outputs the runner scores, as log-probabilities
(``TTAMethod.log_probabilities``: LAME returns probabilities; ROID's output, its logits times
the smoothed class prior as officially, is read as logits). Non-finite rows are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SND_TEMPERATURE = 0.05  # Saito et al.'s tau
#: criterion -> True if larger values are better
CRITERIA = {"entropy": False, "snd": True, "consistency": False}


@torch.no_grad()
def label_free_criteria(
    log_probs: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor] | None = None
) -> dict[str, float]:
    """The criteria of one batch from its scored log-probabilities (NaN when no row is finite);
    ``pair``: log-probabilities of the batch and of its view under one state (consistency; NaN
    without it)."""
    log_p = _finite_rows(log_probs.detach().float())
    row = {name: float("nan") for name in CRITERIA}
    if len(log_p):
        row["entropy"] = float(-torch.special.xlogy(log_p.exp(), log_p.exp()).sum(dim=1).mean())
        row["snd"] = soft_neighbourhood_density(log_p)
    if pair is not None:
        now, view = (t.detach().float() for t in pair)
        finite = torch.isfinite(now).all(dim=1) & torch.isfinite(view).all(dim=1)
        if finite.any():
            p, log_p, log_q = now[finite].exp(), now[finite], view[finite]
            kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=1)
            row["consistency"] = float(kl.mean())
    return {name: round(value, 6) for name, value in row.items()}


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    return values[torch.isfinite(values).all(dim=1)]


def soft_neighbourhood_density(log_p: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """SND of predictions given as log-probabilities (n, C); NaN for n < 2."""
    n = log_p.shape[0]
    if n < 2:
        return float("nan")
    features = F.normalize(log_p.exp(), dim=1)  # log_p: finite rows
    similarity = features @ features.T
    others = similarity[~torch.eye(n, dtype=torch.bool, device=similarity.device)].view(n, n - 1)
    neighbours = (others / temperature).log_softmax(dim=1)
    return float(-(neighbours.exp() * neighbours).sum(dim=1).mean())
