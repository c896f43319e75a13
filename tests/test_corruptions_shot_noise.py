"""The exact Poisson sampler of shot_noise: its pmf, its alias tables and the bytes it draws.

shot_noise samples ``Poisson(k / 255 * lam)`` from one alias table per grey level ``k``
(``noise._shot_tables``); these tests hold each piece to scipy's Poisson law, so a wrong table,
a wrong bucket/fraction split or a truncated support fails here even when mean and variance
(``test_corruptions.test_noise_distribution``) still look right.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ttabench.data.corruptions import TABLES, corrupt, noise


def implied_pmf(accept: np.ndarray, alias: np.ndarray) -> np.ndarray:
    """The law an alias table samples: cell j uniform, keep j w.p. accept[j], else alias[j]."""
    m = len(accept)
    p = accept / m
    np.add.at(p, alias, (1 - accept) / m)
    return p


@pytest.mark.parametrize("seed", range(6))
def test_alias_table_samples_its_pmf(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(int(rng.integers(1, 400)), 0.3))
    p[rng.random(p.size) < 0.3] = 0.0  # empty cells, as in a Poisson table's far tail
    p = p / p.sum() if p.sum() > 0 else np.eye(p.size)[0]
    accept, alias = noise.alias_table(p)
    assert ((accept >= 0) & (accept <= 1)).all()
    assert ((alias >= 0) & (alias < p.size)).all()
    np.testing.assert_allclose(implied_pmf(accept, alias), p, rtol=0, atol=1e-14)


@pytest.mark.parametrize("lam", [3, 12, 60, 500])
def test_poisson_pmf_and_its_support(lam):
    m = noise.poisson_support(lam)
    assert stats.poisson.sf(m - 1, lam) < 1e-16  # what the table leaves out
    rates = np.array([0.0, 0.3, lam / 3, float(lam)])
    expected = stats.poisson.pmf(np.arange(m), rates[:, None])
    np.testing.assert_allclose(noise.poisson_pmf(rates, m), expected, rtol=1e-9, atol=1e-300)


def exact_byte_law(level: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Output bytes of ``np.uint8(clip(Poisson(level / 255 * lam) / lam, 0, 1) * 255)``."""
    rate = level / 255.0 * lam
    n = np.arange(int(stats.poisson.ppf(1 - 1e-15, rate)) + 2)
    out = np.floor(np.clip(n / lam, 0, 1) * 255)
    support = np.unique(out)
    return support, np.array([stats.poisson.pmf(n[out == s], rate).sum() for s in support])


@pytest.mark.parametrize("profile", ["cifar", "imagenet"])
@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_bytes_follow_the_poisson_law(profile, severity):
    levels = (0, 1, 17, 128, 254, 255)
    x = torch.tensor(levels, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 48, 48)
    lam = float(TABLES["shot_noise"][profile][severity - 1])
    gens = [torch.Generator().manual_seed(severity * 100 + i) for i in range(len(levels))]
    out = corrupt(x.contiguous(), "shot_noise", severity, gens, profile)
    for i, level in enumerate(levels):
        sample = out[i].flatten().numpy()
        support, p = exact_byte_law(level, lam)
        assert np.isin(sample, support).all(), (level, np.setdiff1d(sample, support))
        expected = p * sample.size
        observed = np.array([(sample == s).sum() for s in support])
        big = expected >= 5  # pool the thin tail into one bin
        f_obs = np.append(observed[big], observed[~big].sum())
        f_exp = np.append(expected[big], expected[~big].sum())
        if f_exp[-1] < 5:
            f_obs, f_exp = f_obs[:-1], f_exp[:-1]
            f_exp = f_exp * f_obs.sum() / f_exp.sum()
        if len(f_obs) > 1:
            assert stats.chisquare(f_obs, f_exp).pvalue > 1e-4, (profile, severity, level)
        else:  # one possible byte (level 0): every draw is it
            assert (sample == support[np.argmax(p)]).all()
