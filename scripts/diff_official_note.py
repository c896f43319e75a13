"""Differential check: ttabench's IABN layer and PBRS memory against NOTE's official code.

Official: TaesikGong/NOTE a714a2a2a9406903ba787b0bc240a95dd0342de5, ``utils/iabn.py``
(``convert_iabn``, ``InstanceAwareBatchNorm2d``) and ``utils/memory.py`` (``PBRS``), loaded at
run time from a bare git snapshot (``--note-git``, one ``git show`` per file into ``--out``);
never copied into this repository. Their ``conf`` module is stubbed with the values ``tta.sh``
passes (``iabn_k`` 4, ``skip_thres`` 1, 10 classes).

- IABN: the embedded ResNet-8 converted by both sides (ttabench ``norm=iabn``; official
  ``convert_iabn``), then the same batches of the embedded corrupted data (gaussian_noise, fog;
  severity 5) through both, alternating eval-mode predictions and train-mode forwards (which move
  the running statistics, momentum 0.01 as NOTE sets it): largest |logit difference| and
  largest |running-statistics difference|.
- PBRS: the same pseudo-labelled stream (class-sorted runs and i.i.d. labels) offered to both
  memories. The official draws from Python's ``random`` (``choice``, ``randrange``,
  ``uniform``); its module's ``random`` is replaced by a proxy drawing the same decisions from a
  torch generator twin of ttabench's (``choice(s)`` = ``s[randint(len(s))]``, ``randrange(0, n)``
  = ``randint(n)``, ``uniform(0, 1)`` = ``rand()``), so both consume one stream in the same
  order: the stored items must be equal after every offer.

Exit code 0 when every check agrees exactly (logits within 1e-4).

    python scripts/diff_official_note.py [--note-git /work/.mirror/TaesikGong+NOTE/repo]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import torch
from diff_official import make_streams  # scripts/ is on sys.path when run as a script

from ttabench.data.embedded import EmbeddedCorruptions
from ttabench.methods.note import PBRSMemory
from ttabench.models.embedded import load_embedded
from ttabench.norms.iabn import IABNNorm

COMMIT = "a714a2a2a9406903ba787b0bc240a95dd0342de5"
FILES = ("utils/iabn.py", "utils/memory.py")


def load_official(git_dir: Path, out: Path) -> dict[str, types.ModuleType]:
    """``git show`` each file into ``out`` and import it with a stub ``conf``."""
    head = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        sys.exit(f"no NOTE snapshot at {git_dir} (fetch TaesikGong/NOTE as a bare repository)")
    if head.stdout.strip() != COMMIT:
        print(f"note: snapshot at {head.stdout.strip()[:12]}, checked against {COMMIT[:12]}")
    conf = types.ModuleType("conf")
    conf.args = types.SimpleNamespace(iabn_k=4.0, skip_thres=1, opt={"num_class": 10})
    sys.modules["conf"] = conf
    modules = {}
    for path in FILES:
        text = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], capture_output=True, check=True
        ).stdout
        file = out / "note" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(text)
        name = "note_official_" + Path(path).stem
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[Path(path).stem] = module
    return modules


def check_iabn(official: types.ModuleType, batches: dict[str, list[torch.Tensor]]) -> list[str]:
    rows = []
    for order, stream in batches.items():
        ours = IABNNorm(k=4.0, skip_thres=1).apply(load_embedded())
        theirs = load_embedded()
        theirs.net = official.convert_iabn(theirs.net)
        for net in (ours, theirs):
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = 0.01
        logit_diff = stat_diff = 0.0
        agree = total = 0
        with torch.no_grad():
            for i, x in enumerate(stream):
                train = i % 2 == 1  # alternate: predictions, and train-mode forwards
                ours.train(train)
                theirs.train(train)
                a, b = ours(x), theirs(x)
                logit_diff = max(logit_diff, float((a - b).abs().max()))
                agree += int((a.argmax(1) == b.argmax(1)).sum())
                total += len(x)
        for (_, p), (_, q) in zip(
            ours.state_dict().items(), _renamed(theirs.state_dict()).items(), strict=True
        ):
            if p.is_floating_point():
                stat_diff = max(stat_diff, float((p - q).abs().max()))
        layers = [m for m in theirs.modules() if isinstance(m, official.InstanceAwareBatchNorm2d)]
        source = load_embedded().net.bn1.running_mean
        moved = float((ours.net.bn1.running_mean - source).abs().max())
        ok = logit_diff < 1e-4 and stat_diff < 1e-5 and len(layers) > 0 and moved > 0
        rows.append(
            f"| IABN ({len(layers)} layers) | {order} | {len(stream)} | {logit_diff:.1e} "
            f"| {100 * agree / total:.2f} | {stat_diff:.1e} | {moved:.1e} "
            f"| {'pass' if ok else 'FAIL'} |"
        )
    return rows


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official IABN keeps its BN as ``_bn``: ``bn1._bn.weight`` -> ``bn1.weight``."""
    return {k.replace("._bn.", "."): v for k, v in state.items()}


class TorchRandom:
    """Python ``random``'s calls used by PBRS, drawn from a torch generator as ttabench draws."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def choice(self, seq):
        return seq[int(torch.randint(len(seq), (), generator=self.generator))]

    def randrange(self, start: int, stop: int) -> int:
        return start + int(torch.randint(stop - start, (), generator=self.generator))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))


def check_pbrs(official: types.ModuleType, n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    labels = {
        "class-sorted runs": [
            c for c in torch.randperm(10, generator=g).tolist() for _ in range(n)
        ],
        "iid": torch.randint(10, (10 * n,), generator=g).tolist(),
    }
    rows = []
    for order, stream in labels.items():
        official.random = TorchRandom(seed)
        theirs = official.PBRS(capacity=64)
        ours = PBRSMemory(64, 10, torch.Generator().manual_seed(seed))
        first_diff = None
        for t, label in enumerate(stream):
            x = torch.tensor([float(t)])
            ours.add(x, label)
            theirs.add_instance([x, label, 0, label, 0])
            mine = [[float(v) for v in items] for items in ours.items]
            their = [[float(v) for v in data[0]] for data in theirs.data]
            if first_diff is None and mine != their:
                first_diff = t
        occupancy = ",".join(map(str, ours.occupancy()))
        verdict = "pass" if first_diff is None else f"FAIL at offer {first_diff}"
        rows.append(
            f"| PBRS | {order} | {len(stream)} offers | occupancy {occupancy} | {verdict} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--note-git", type=Path, default=Path("/work/.mirror/TaesikGong+NOTE/repo"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/official"))
    parser.add_argument("--n", type=int, default=256, help="samples per domain and order")
    args = parser.parse_args()
    torch.manual_seed(0)
    official = load_official(args.note_git, args.out)
    dataset = EmbeddedCorruptions(["gaussian_noise", "fog"], 5, n_per_domain=args.n)
    batches = make_streams(dataset, args.n, 64)
    head = "| check | order | batches | max abs logit diff | argmax agree % | max abs state diff"
    print(f"{head} | statistics moved | result |\n|---|---|---|---|---|---|---|---|")
    iabn = check_iabn(official["iabn"], batches)
    print("\n".join(iabn))
    print("\n| check | labels | stream | memory at the end | result |\n|---|---|---|---|---|")
    pbrs = check_pbrs(official["memory"], args.n)
    print("\n".join(pbrs))
    failed = [r for r in iabn + pbrs if "FAIL" in r]
    print("PASS" if not failed else f"FAIL: {len(failed)} check(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
