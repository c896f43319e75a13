# ruff: noqa: E501 (the catalogue is a table: one case a line)
"""The bad-input catalogue: hostile but realistic inputs to every command, and what they give.

Each case runs a ``ttabench`` command in this process (``ttabench.cli.main``) on files it
prepares in a temporary folder, and records the exit code, the last line of standard error,
whether a traceback was printed, and the recorded status of the run directory (``-``: none
written). ``tests/test_bad_inputs.py`` asserts every case; this script prints the table.

    python scripts/bad_inputs.py            # markdown table and counts
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ttabench import cli  # noqa: E402

SMALL = ["dataset.corruptions=[contrast]", "dataset.n_per_domain=64", "progress=false"]
RUN_DIR = "hydra.run.dir={tmp}/run"
TABLE = str(
    ROOT / "results" / "memory" / "summaries.csv.gz"
)  # complete runs, as collect reads them


@dataclass
class Case:
    """``argv`` with ``{tmp}`` for the case's folder; the expected exit code and a piece of the
    last error line (the key, value or file it must name); ``status``: the run's recorded
    status (None: no run directory is expected)."""

    name: str
    argv: list[str]
    code: int
    names: str
    status: str | None = None
    setup: Callable[[Path], None] = field(default=lambda tmp: None)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_cifar(tmp: Path) -> None:
    folder = tmp / "crafted" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    entry = {"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4, "x": _RunsCode(tmp / "ran")}
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=2))


def a_file(tmp: Path) -> None:
    (tmp / "a_file").write_text("not a folder\n")


def text_checkpoint(tmp: Path) -> None:
    (tmp / "weights.pt").write_text("this is not a checkpoint\n")


def summaries(tmp: Path) -> None:
    for name, text in (("empty", ""), ("foreign", "a,b\n1,2\n")):
        (tmp / "runs" / name).mkdir(parents=True)
        (tmp / "runs" / name / "summary.csv").write_text(text)


def run_case(name: str, overrides: list[str], code: int, names: str, status: str | None,
             setup: Callable[[Path], None] = lambda tmp: None) -> Case:  # fmt: skip
    return Case(name, ["run", *SMALL, *overrides, RUN_DIR], code, names, status, setup)


CASES: list[Case] = [
    # run: run keys (checked before anything is written)
    run_case("seed not a number", ["seed=abc"], 2, "seed must be an integer, not 'abc'", "failed"),
    run_case("seed a boolean", ["seed=true"], 2, "seed must be an integer, not True", "failed"),
    run_case("stream_seed a float", ["stream_seed=1.5"], 2, "stream_seed must be an integer", "failed"),
    run_case("threads 0", ["threads=0"], 2, "threads must be an integer >= 1 or null, not 0", "failed"),
    run_case("threads negative", ["threads=-1"], 2, "threads must be an integer >= 1", "failed"),
    run_case("threads a word", ["threads=two"], 2, "threads must be an integer >= 1", "failed"),
    run_case("unknown device", ["device=bogus"], 2, "device must be auto, cpu, cuda", "failed"),
    run_case("absent CUDA device", ["device=cuda:9"], 2, "device=cuda:9 but this machine has", "failed"),
    run_case("resume not a boolean", ["resume=maybe"], 2, "resume must be true or false", "failed"),
    run_case("save_predictions not a boolean", ["save_predictions=maybe"], 2,
             "save_predictions must be true or false", "failed"),
    run_case("progress a number", ["progress=2"], 2, "progress must be true or false", "failed"),
    run_case("prefetch negative", ["prefetch=-1"], 2, "prefetch must be an integer >= 0", "failed"),
    run_case("amp not a boolean", ["amp=maybe"], 2, "amp must be true or false", "failed"),
    run_case("channels_last a number", ["channels_last=1"], 2, "channels_last must be true", "failed"),
    run_case("compile a word", ["compile=yes"], 2, "compile must be true or false", "failed"),
    run_case("consistency a word", ["consistency=yes"], 2, "consistency must be true or false",
             "failed"),
    run_case("sweep preset without -m", ["+sweep=sensitivity_lr"], 2, "sweeps its values only under -m",
             None),
    # run: config groups and knobs
    run_case("unknown method", ["method=nope"], 2, "Available options in 'method': alpha, bn", None),
    run_case("unknown stream", ["stream=nope"], 2, "stream", None),
    run_case("unknown norm", ["norm=nope"], 2, "norm", None),
    run_case("unknown model", ["model=nope"], 2, "model", None),
    run_case("unknown dataset", ["dataset=nope"], 2, "dataset", None),
    run_case("unknown knob", ["stream.no_such_knob=1"], 2, "Key 'no_such_knob' is not in struct", None),
    run_case("unknown protocol", ["protocol=nope"], 2,
             "Available options in 'protocol': compute_aware, episodic, online", None),
    run_case("oracle steps a word", ["protocol=oracle_selection", "protocol.n_steps=ten"], 2,
             "protocol.n_steps must be an integer, got 'ten'", "failed"),
    run_case("compute-aware cost unknown", ["protocol=compute_aware", "protocol.cost=fast"], 2,
             "protocol.cost must be measured, passes or a number > 0", "failed"),
    run_case("compute-aware eta infinite", ["protocol=compute_aware", "protocol.eta=inf"], 2,
             "protocol.eta must be in [0.0, 1000000.0]", "failed"),
    run_case("batch size 0", ["stream.batch_size=0"], 2, "batch_size", "failed"),
    # run: outliers
    run_case("outliers a number", ["stream.outliers=0.2"], 2,
             "stream.outliers must be a node like {ratio: 0.2", "failed"),
    run_case("outlier ratio 1.5", ["stream.outliers.ratio=1.5"], 2,
             "stream.outliers.ratio must be in [0, 1), got 1.5", "failed"),
    run_case("unknown outlier source", ["stream.outliers.ratio=0.2", "stream.outliers.source=x"],
             2, "stream.outliers.source='x'; valid: embedded_ood, noise, split", "failed"),
    run_case("shuffle on a dirichlet stream", ["stream=dirichlet", "stream.outliers.ratio=0.2",
             "stream.outliers.mix=shuffle"], 2, "would destroy the labels=dirichlet", "failed"),
    run_case("more outliers than the source has", ["stream.outliers.ratio=0.999"], 2,
             "needs 63936 outliers under contrast-5, but source embedded_ood has 10000", "failed"),
    run_case("split source without a split", ["stream.outliers.ratio=0.2",
             "stream.outliers.source=split"], 2, "use dataset=embedded_8_2", "failed"),
    run_case("disk outliers missing", ["stream.outliers.ratio=0.2", "stream.outliers.source=svhn_c",
             "ood_root={tmp}/none"], 2, "Expected layout: <root>/SVHN-C/", "failed"),
    run_case("unknown outlier score", ["outlier_score=max"], 2,
             "outlier_score='max'; valid: entropy, msp", "failed"),
    run_case("stamp augment unknown", ["method=stamp", "method.augment=flip"], 2,
             "method.augment='flip'; valid: cotta, crop_flip", "failed"),
    run_case("negative delta", ["stream=dirichlet", "stream.delta=-1"], 2, "delta", "failed"),
    run_case("unknown label ordering", ["stream.labels=bogus"], 2, "bogus", "failed"),
    run_case("unknown schedule", ["stream.domains=bogus"], 2, "bogus", "failed"),
    run_case("corruption listed twice", ["dataset.corruptions=[contrast,fog,contrast]"], 2,
             "lists contrast more than once", "failed"),
    run_case("unknown corruption", ["dataset.corruptions=[nope]"], 2, "nope", "failed"),
    run_case("severity 9", ["dataset.severity=9"], 2, "severity", "failed"),
    run_case("negative n_per_domain", ["dataset.n_per_domain=-5"], 2, "n_per_domain", "failed"),
    run_case("EATA without Fisher samples", ["method=eata", "method.fisher_size=0"], 2,
             "fisher_size", "failed"),
    run_case("norm preset with another norm", ["method=bn", "norm=unmix"], 2,
             "norm-only preset", "failed"),
    run_case("unknown unmix knob value", ["norm=unmix", "norm.num_components=0"], 2,
             "num_components", "failed"),
    # run: files
    run_case("zoo model without weights", ["model=wrn28_10"], 2, "Standard.pt", "failed"),
    run_case("text file as checkpoint", ["model=wrn28_10", "model.checkpoint={tmp}/weights.pt"], 2,
             "weights.pt", "failed", text_checkpoint),
    run_case("missing CIFAR-10-C root", ["dataset=cifar10c", "dataset.root={tmp}/none"], 2,
             "{tmp}/none", "failed"),
    run_case("crafted CIFAR pickle (generate)", ["dataset=cifar10c", "dataset.source=generate",
             "dataset.root={tmp}/crafted"], 2, "posix.system", "failed", crafted_cifar),
    run_case("missing ImageNet-C root", ["dataset=imagenetc", "dataset.root={tmp}/none"], 2,
             "{tmp}/none", "failed"),
    run_case("JPEG decoding threads negative", ["dataset=imagenetc", "dataset.workers=-1",
             "dataset.root={tmp}/none"], 2, "workers must be an integer >= 0", "failed"),
    Case("run directory under a file", ["run", *SMALL, "hydra.run.dir={tmp}/a_file/run"], 2,
         "{tmp}/a_file is a file, not a folder", None, a_file),
    Case("sweep directory under a file", ["run", "-m", *SMALL, "hydra.sweep.dir={tmp}/a_file/s"],
         2, "{tmp}/a_file is a file, not a folder", None, a_file),
    # compare
    Case("compare: no summaries", ["compare", "{tmp}/nothing"], 2, "{tmp}/nothing"),
    Case("compare: empty table file", ["compare", "{tmp}/a_file"], 2, "{tmp}/a_file", None,
         lambda tmp: (tmp / "a_file").write_text("")),
    Case("compare: only broken summaries", ["compare", "{tmp}/runs"], 2, "no summary.csv under",
         None, summaries),
    Case("compare: unknown row key", ["compare", TABLE, "--rows",
         "nope"], 2, "nope"),
    Case("compare: unknown column key", ["compare", TABLE, "--columns",
         "nope"], 2, "nope"),
    Case("compare: bad --where", ["compare", TABLE, "--where",
         "nope"], 2, "--where"),
    Case("compare: unknown format", ["compare", "x", "--format", "nope"], 2, "--format"),
    Case("compare: negative digits", ["compare", TABLE, "--digits",
         "-1"], 2, "--digits"),
    Case("compare: no folder given", ["compare"], 2, "dirs"),
    # plot
    Case("plot: no summaries", ["plot", "{tmp}/nothing"], 2, "{tmp}/nothing"),
    Case("plot: unknown kind", ["plot", "{tmp}/nothing", "--kind", "nope"], 2, "nope"),
    Case("plot: --out onto a file", ["plot", TABLE, "--kind", "corruption", "--out",
         "{tmp}/a_file"], 2, "--out={tmp}/a_file", None, a_file),
    Case("plot: --where matches nothing", ["plot", TABLE, "--where",
         "method=nope"], 2, "matching --where method=nope"),
    Case("plot: window 0", ["plot", TABLE, "--window", "0"], 2,
         "--window"),
    Case("plot: sensitivity without --x", ["plot", TABLE, "--kind", "sensitivity"], 2,
         "--kind sensitivity needs --x KEY"),
    Case("compare: unknown sensitivity key", ["compare", TABLE, "--sensitivity", "no_such_knob"],
         2, "unknown key 'no_such_knob'"),
    Case("compare: --heldout alone", ["compare", TABLE, "--heldout", "{tmp}/nothing"], 2,
         "--heldout goes with --sensitivity KEY"),
    Case("compare: auroc without outliers", ["compare", TABLE, "--metric", "auroc"], 2,
         "no run has auroc: it measures outlier detection"),
    Case("plot: h_score without outliers", ["plot", TABLE, "--kind", "corruption", "--metric",
         "h_score", "--out", "{tmp}/figs"], 2, "no run has h_score"),
    Case("plot: metric of the online figure", ["plot", TABLE, "--kind", "online", "--metric",
         "auroc"], 2, "--metric other than error draws --kind delta,corruption only"),
    # make-c
    Case("make-c: unknown benchmark", ["make-c", "nope"], 2, "nope"),
    Case("make-c: missing clean root", ["make-c", "cifar10c", "--root", "{tmp}/none"], 2,
         "{tmp}/none"),
    Case("make-c: crafted CIFAR pickle", ["make-c", "cifar10c", "--root", "{tmp}/crafted", "--out",
         "{tmp}/out"], 2, "posix.system", None, crafted_cifar),
    Case("make-c: --out under a file", ["make-c", "cifar10c", "--root", "{tmp}", "--out",
         "{tmp}/a_file/x"], 2, "{tmp}/a_file is a file", None, a_file),
    Case("make-c: unknown corruption", ["make-c", "cifar10c", "--root", "{tmp}", "--corruptions",
         "nope"], 2, "nope"),
    Case("make-c: severity 9", ["make-c", "imagenetc", "--root", "{tmp}", "--severities", "9"],
         2, "severit"),
    Case("make-c: severities not numbers", ["make-c", "imagenetc", "--root", "{tmp}",
         "--severities", "a,b"], 2, "--severities takes comma-separated integers"),
    Case("make-c: benchmark that cannot be generated", ["make-c", "tinyimagenetc", "--root",
         "{tmp}"], 2, "tinyimagenetc"),
    # pretrain
    Case("pretrain: unknown norm", ["pretrain", "--norm", "nope"], 2, "--norm"),
    Case("pretrain: epochs 0", ["pretrain", "--epochs", "0", "--out", "{tmp}/m.pt"], 2,
         "--epochs"),
    Case("pretrain: negative width", ["pretrain", "--width", "-1", "--out", "{tmp}/m.pt"], 2,
         "--width"),
    Case("pretrain: --out under a file", ["pretrain", "--epochs", "1", "--out",
         "{tmp}/a_file/m.pt"], 2, "{tmp}/a_file is a file", None, a_file),
    Case("pretrain: epochs not a number", ["pretrain", "--epochs", "x"], 2, "--epochs"),
    Case("pretrain: Fashion-MNIST not under --root", ["pretrain", "--data", "fashion_mnist",
         "--root", "{tmp}/nowhere", "--out", "{tmp}/m.pt"], 2, "apt install dataset-fashion-mnist"),
    Case("pretrain: unknown --data", ["pretrain", "--data", "mnist"], 2, "--data"),
    # download (nothing is fetched in these: each stops before the network)
    Case("download: unknown item", ["download", "cifar10c", "imagenet"], 2,
         "unknown item imagenet; valid: cifar10c"),
    Case("download: data item without a root", ["download", "cifar10"], 2, "--root DIR"),
    Case("download: --root under a file", ["download", "cifar10", "--root", "{tmp}/a_file/d"],
         2, "{tmp}/a_file is a file", None, a_file),
    Case("download: --model-dir under a file", ["download", "wrn28_10", "--model-dir",
         "{tmp}/a_file/m"], 2, "{tmp}/a_file is a file", None, a_file),
    # the front end
    Case("unknown command", ["frobnicate"], 2, "unknown command 'frobnicate'"),
]  # fmt: skip


@dataclass
class Outcome:
    code: int
    line: str
    traceback: bool
    status: str


def run(case: Case, tmp: Path) -> Outcome:
    """Run one case in ``tmp``; what it gave."""
    case.setup(tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # noqa: BLE001 (what the user would see as a traceback)
            code = 1
            print(f"Traceback (uncaught): {type(exc).__name__}: {exc}", file=sys.stderr)
    text = err.getvalue()
    lines = [line for line in text.strip().splitlines() if line.strip()]
    summary = tmp / "run" / "summary.csv"
    status = pd.read_csv(summary)["status"].iloc[-1] if summary.exists() else "-"
    return Outcome(code, lines[-1] if lines else "", "Traceback" in text, status)


def table() -> pd.DataFrame:
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            got = run(case, Path(tmp))
            line = got.line.replace(tmp, "<tmp>")
        rows.append({"command": case.argv[0], "input": case.name, "exit": got.code,
                     "message (last line)": line[:110], "status": got.status,
                     "traceback": got.traceback})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> int:
    frame = table()
    print(frame.to_markdown(index=False))
    print(f"\n{len(frame)} cases; exit codes {frame['exit'].value_counts().to_dict()}; "
          f"tracebacks {int(frame['traceback'].sum())}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
