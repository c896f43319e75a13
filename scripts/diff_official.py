"""Differential check: ttabench's TENT, ETA/EATA and SAR against the official implementations.

The official code is loaded at run time (importlib) from ``--official-dir`` (default
/tmp/official); it is never copied into this repository. Checked against:

- DequanWang/tent     e9e926a668d85244c66a6d5c006efbd2b82e83e8  (tent.py)
- mr-eggplant/EATA    f739b3668cc7617e9b9f1979c1a358497a3472c3  (eata.py; Fisher as in main.py)
- mr-eggplant/SAR     20f6e24b17525f34503510afccedc0629b67b7c4  (sar.py, sam.py)

--fetch-help: the layout DIR/tent/tent.py, DIR/eata/eata.py, DIR/sar/sar.py, DIR/sar/sam.py
comes from bare git snapshots of the three repositories (e.g. ``git clone --bare URL`` or a
mirror directory), one ``git show`` per file:

    mkdir -p /tmp/official/{tent,eata,sar}
    git --git-dir=TENT.git show HEAD:tent.py > /tmp/official/tent/tent.py
    git --git-dir=EATA.git show HEAD:eata.py > /tmp/official/eata/eata.py
    git --git-dir=SAR.git  show HEAD:sar.py  > /tmp/official/sar/sar.py
    git --git-dir=SAR.git  show HEAD:sam.py  > /tmp/official/sar/sam.py
    git --git-dir=X.git rev-parse HEAD   # the commit to compare with the list above

Both sides get a copy of the embedded ResNet-8 and identical batches of the embedded corrupted
data (gaussian_noise, fog; severity 5), in an i.i.d. and a label-sorted order, continual (no
reset between domains). Per method and order: the largest |logit difference| over all batches,
the argmax agreement, the largest |difference| of the trained affine parameters at the end, and
method events (EATA: samples selected; SAR: recoveries) on each side.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib.util
import io
import math
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from ttabench.data.embedded import EmbeddedCorruptions
from ttabench.data.source_data import source_data_provider
from ttabench.methods.base import MethodContext
from ttabench.methods.eata import EATA
from ttabench.methods.sar import SAR
from ttabench.methods.tent import Tent
from ttabench.models.embedded import load_embedded
from ttabench.norms.bn import BatchStatsNorm

E_MARGIN, D_MARGIN, SEED = 0.4, 0.4, 0
STUBBED: list[str] = []
NOTES: set[str] = set()
SAR_NOTE = (
    "official SAR recovery keeps SGD momentum: SAR.reset -> SAM.load_state_dict (sam.py:65) "
    "restores SAM.state only, not base_optimizer.state; ttabench's reset (base.py:136) clears it"
)
EATA_NOTE = (
    "ETA/EATA logit differences are float32 rounding: ttabench eata.py:103 exp(E0 - H) vs "
    "official eata.py:109 1 / exp(H - E0) (and the Fisher term's summation order)"
)
# memoised: the embedded source set is regenerated on every call (same seed, same samples)
PROVIDER = functools.lru_cache(maxsize=None)(source_data_provider("embedded", None, 0, SEED))


def load_official(path: Path, name: str) -> types.ModuleType:
    """Import ``path`` as module ``name``; a missing import is stubbed by an empty module."""
    for _ in range(10):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            with warnings.catch_warnings():  # torch.jit.script's deprecation warning
                warnings.simplefilter("ignore", FutureWarning)
                spec.loader.exec_module(module)
            return module
        except ModuleNotFoundError as exc:
            sys.modules[exc.name] = types.ModuleType(exc.name)
            STUBBED.append(f"{exc.name} (for {path.name})")
    raise ImportError(f"cannot import {path}")


def make_streams(ds: EmbeddedCorruptions, n: int, bs: int) -> dict[str, list[torch.Tensor]]:
    """i.i.d. and label-sorted batches, domain after domain, as floats in [0, 1]."""
    rng = np.random.default_rng(SEED)
    streams: dict[str, list[torch.Tensor]] = {"iid": [], "label-sorted": []}
    for domain in ds.domains:
        labels = ds.labels(domain)[:n]
        orders = {"iid": rng.permutation(n), "label-sorted": np.argsort(labels, kind="stable")}
        for key, order in orders.items():
            for start in range(0, n - bs + 1, bs):
                batch = ds.images(domain, order[start : start + bs])
                streams[key].append(batch.float().div(255))
    return streams


def official_fishers(model: torch.nn.Module, images: torch.Tensor, bs: int) -> dict:
    """EATA main.py (lines 148-171): squared CE(argmax) gradients, summed over the batches and
    divided by their number at the last one; {name: [fisher, theta0]}."""
    batches = torch.split(images.float().div(255), bs)
    fishers = {}
    for it, x in enumerate(batches, start=1):
        outputs = model(x)
        torch.nn.functional.cross_entropy(outputs, outputs.max(1)[1]).backward()
        for name, param in model.named_parameters():
            if param.grad is not None:
                fisher = param.grad.data.clone().detach() ** 2
                if it > 1:
                    fisher = fisher + fishers[name][0]
                if it == len(batches):
                    fisher = fisher / it
                fishers[name] = [fisher, param.data.clone().detach()]
        model.zero_grad()
    return fishers


def build(method: str, off: dict, source: torch.nn.Module, args) -> tuple:
    """(ttabench method, official wrapper, official recovery counter) on copies of ``source``."""
    ln_c = math.log(10)
    provider = PROVIDER
    ctx = MethodContext(num_classes=10, batch_size=args.batch_size, source_data=provider)
    ours_model = BatchStatsNorm().apply(copy.deepcopy(source))
    model = copy.deepcopy(source)
    counter = [0]
    if method == "TENT":
        adam = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999), weight_decay=0)
        ours = Tent(ours_model, ctx, optim=adam)
        model = off["tent"].configure_model(model)
        params, _ = off["tent"].collect_params(model)
        theirs = off["tent"].Tent(model, adam(params), steps=1, episodic=False)
    elif method in ("ETA", "EATA"):
        alpha = args.fisher_alpha if method == "EATA" else 0.0
        sgd = functools.partial(torch.optim.SGD, lr=2.5e-4, momentum=0.9)
        ours = EATA(ours_model, context=ctx, optim=sgd, e_margin=E_MARGIN, d_margin=D_MARGIN,
                    fisher_alpha=alpha, fisher_size=args.fisher_size)  # fmt: skip
        model = off["eata"].configure_model(model)
        params, _ = off["eata"].collect_params(model)
        fishers = None
        if alpha > 0:
            images, _ = provider(args.fisher_size)
            fishers = official_fishers(model, images, args.batch_size)
        theirs = off["eata"].EATA(model, torch.optim.SGD(params, 2.5e-4, momentum=0.9),
                                  fishers=fishers, fisher_alpha=alpha,
                                  e_margin=E_MARGIN * ln_c, d_margin=D_MARGIN)  # fmt: skip
    else:  # SAR: recovery=official (as sar.py) or, for SAR-fresh, ttabench's default
        sgd = functools.partial(torch.optim.SGD, lr=1e-3, momentum=0.9)
        recovery = "official" if method == "SAR" else "fresh"
        ours = SAR(
            ours_model, context=ctx, optim=sgd, e_margin=E_MARGIN, rho=0.05, recovery=recovery
        )
        model = off["sar"].configure_model(model)
        params, _ = off["sar"].collect_params(model)
        sam = off["sam"].SAM(params, torch.optim.SGD, rho=0.05, lr=1e-3, momentum=0.9)
        theirs = off["sar"].SAR(model, sam, margin_e0=E_MARGIN * ln_c)
        reset = theirs.reset

        def counting_reset() -> None:  # official SAR.forward calls reset() on a recovery
            counter[0] += 1
            reset()  # SAM.load_state_dict: SAM.state only, base_optimizer.state survives
            if sam.base_optimizer.state:
                NOTES.add(SAR_NOTE)

        theirs.reset = counting_reset
    return ours, theirs, counter


def events(method: str, ours, theirs, counter: list[int], costs: dict) -> str:
    if method.startswith("SAR"):
        return f"recoveries {costs['recoveries']} / {counter[0]}"
    if method in ("ETA", "EATA"):
        return f"selected {costs['backwards']} / {theirs.num_samples_update_2}"
    return "-"


def compare(method: str, off: dict, source, batches: list[torch.Tensor], args) -> dict:
    torch.manual_seed(SEED)
    ours, theirs, counter = build(method, off, source, args)
    ours.pop_costs()
    max_logit, agree, total, costs = 0.0, 0, 0, {"recoveries": 0, "backwards": 0}
    first_logit_diff = None
    for i, x in enumerate(batches):
        a = ours(x.clone())
        with contextlib.redirect_stdout(io.StringIO()):  # official SAR prints on recovery
            b = theirs(x.clone()).detach()
        diff = (a - b).abs().max().item()
        if diff > args.tol and first_logit_diff is None:
            first_logit_diff = i
        max_logit = max(max_logit, diff)
        if diff > args.tol and method in ("ETA", "EATA"):
            NOTES.add(EATA_NOTE)
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(x)
        for k, v in ours.pop_costs().items():
            if k in costs:
                costs[k] += v
    theirs_params = dict(theirs.model.named_parameters())
    max_param = max(
        (p.detach() - theirs_params[name].detach()).abs().max().item()
        for name, p in ours.model.named_parameters()
        if p.requires_grad
    )
    return {
        "logit": max_logit,
        "agree": 100.0 * agree / total,
        "param": max_param,
        "first": "-" if first_logit_diff is None else str(first_logit_diff),
        "events": events(method, ours, theirs, counter, costs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, default=Path("/tmp/official"))
    parser.add_argument("--batches", type=int, default=30, help="batches per domain")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fisher-size", type=int, default=2000)
    parser.add_argument("--fisher-alpha", type=float, default=2000.0)
    parser.add_argument("--tol", type=float, default=1e-4, help="logit tolerance (float32)")
    parser.add_argument("--methods", default="TENT,ETA,EATA,SAR,SAR-fresh")
    parser.add_argument("--threads", type=int, default=2, help="1 is faster on a busy host")
    parser.add_argument("--fetch-help", action="store_true", help="how to fill --official-dir")
    args = parser.parse_args()
    if args.fetch_help:
        print(__doc__)
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    root = args.official_dir
    files = {"tent": "tent/tent.py", "eata": "eata/eata.py", "sam": "sar/sam.py"}
    files["sar"] = "sar/sar.py"
    missing = [f for f in files.values() if not (root / f).is_file()]
    if missing:
        sys.exit(f"missing {missing} under {root}: see --fetch-help in this script's docstring")
    off = {key: load_official(root / rel, f"official_{key}") for key, rel in files.items()}
    print(f"official code from {root}; stubbed imports: {', '.join(STUBBED) or 'none needed'}")

    n = args.batches * args.batch_size
    ds = EmbeddedCorruptions(["gaussian_noise", "fog"], 5, n_per_domain=n)
    streams = make_streams(ds, n, args.batch_size)
    source = load_embedded()
    print(f"{len(ds.domains)} domains x {args.batches} batches of {args.batch_size}, continual\n")
    print("| method | order | max abs logit diff | first batch > tol | argmax agree % "
          "| max abs param diff | events (ttabench / official) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for order, batches in streams.items():
            r = compare(method, off, source, batches, args)
            print(f"| {method} | {order} | {r['logit']:.3e} | {r['first']} | {r['agree']:.2f} "
                  f"| {r['param']:.3e} | {r['events']} |")  # fmt: skip
    print("\nSAR: recovery=official (weights only, as sar.py); SAR-fresh: ttabench's default.")
    for note in sorted(NOTES):
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
