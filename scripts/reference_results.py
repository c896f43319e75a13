"""Regenerate results/: the reference results of the embedded default benchmark.

The grid: the norm-only methods {source, bn, alpha, ema, rbn, unmix} (``method=<norm>``) x the
streams {iid, dirichlet (delta 0.1), dirichlet with stream.delta=0.01, sorted, continual, ptta,
mixed, mixed_dirichlet} x seeds {2020, 2021, 2022} at batch size 64 on the full embedded dataset
(every corruption of ``dataset=embedded``, 10,000 images each, severity 5), plus a batch-size-1
block: the same methods x streams, seed 2020, ``dataset.n_per_domain=500``. Every run goes
through ``ttabench run -m`` (the real sweep path), so the script is resumable: run it again
after a crash and only the runs that are not complete are redone. The sweep directory should
hold this grid only (every run under it is tabulated): delete it when the grid changes. Raw
run directories go to ``outputs/`` (git-ignored); the compact outputs are written to ``--out``:

- ``summaries.csv.gz``: every summary row of every run (``ttabench compare
  results/summaries.csv.gz`` rebuilds any table without the raw runs; ``run_dir`` is relative
  to the sweep directory),
- ``tables/*.md``: tables made by the ``ttabench compare`` code,
- ``figures/*.png``: figures made by the ``ttabench plot`` code,
- the generated block of ``README.md`` (between the ``reference:begin/end`` markers) linking them.

``--grid methods`` runs the adapting methods' grid instead (issue "Adapting methods I"): methods
{source, tent, eta, eata, sar, deyo, lame} x norms {bn, unmix} (plus the frozen source model and
LAME's official ``norm=source``) x streams {iid, dirichlet (delta 0.1), continual, ptta, mixed} x
the three seeds at batch size 64 on ``dataset.n_per_domain`` images of every embedded
corruption (``--n-per-domain``, default 2000), into ``outputs/reference_methods/runs`` and
``results/methods/`` (summaries, error tables per norm, the cost table), with its own generated
block in ``results/README.md`` (between ``methods:begin/end``). Under ``norm=bn``,
``method=source`` is test-batch BN without any update (the ``bn`` row of the issue).

``--grid memory`` runs the memory and teacher methods' grid (issue "Adapting methods II"):
{source, bn, tent, rotta, note, cotta, roid} under their own norms (source: frozen; bn: test-batch
BN; tent, cotta, roid: ``bn``; rotta: ``rbn``; note: ``iabn``) and the same under ``norm=unmix``
(source + unmix = UnMix-TNS alone), plus NOTE on its IABN-trained twin (``model=embedded_iabn``),
x streams {iid, dirichlet (delta 0.1 and 0.01), ptta, mixed_dirichlet} x the three seeds, on
``dataset.n_per_domain`` images (default 300) of every embedded corruption, into
``outputs/reference_memory/runs`` and ``results/memory/`` (block ``memory:begin/end``).

``--grid protocols`` runs the evaluation protocols' grid (issue "Evaluation protocols"): the
adapting methods {tent, eta, sar, rotta}, then {eata, deyo, lame, roid}, on their default norms
x protocols {online, episodic, compute_aware, oracle_selection (uses labels; ``protocol.n_steps=3``
here)} x streams {iid,
dirichlet (delta 0.1)} x the three seeds (the first four also under ``compute_aware`` with
``protocol.cost=passes``), plus the frozen source model and test-batch BN online,
on ``dataset.n_per_domain`` images (default 1000) of every embedded corruption, into
``outputs/reference_protocols/runs`` and ``results/protocols/`` (block ``protocols:begin/end``).

``--grid outliers`` runs the outliers grid (issue "Outliers"): {source, bn, tent, eata, sar,
rotta, stamp} on their default norms x streams {iid, dirichlet (delta 0.1)} x the three seeds,
each with 20 % outliers (``stream.outliers.ratio=0.2``, the embedded unseen shapes, STAMP's
2,500 per 10,000) and without (ratio 0), on ``dataset.n_per_domain`` images (default 500) of
every embedded corruption, into ``outputs/reference_outliers/runs`` and ``results/outliers/``
(ID error, AUROC, H-score, FPR95 tables and the effect of the outliers on the ID error).

``--grid sensitivity`` runs TENT's learning-rate sweep (``+sweep=sensitivity_lr``: 7 values x
{iid, dirichlet} x 3 seeds) on the 15 test corruptions and on the four held-out ones
(``HELDOUT``), into ``outputs/reference_sensitivity/{test,heldout}`` and
``results/sensitivity/``: the sensitivity table, the selection table (held-out corruptions and
label-free criteria against the best in hindsight) and the sensitivity figure.

Examples:
    python scripts/reference_results.py                  # the full grid: hours on 2 CPU cores
    python scripts/reference_results.py --grid memory --launcher joblib --n-jobs 2
    python scripts/reference_results.py --grid methods --launcher joblib --n-jobs 2
    python scripts/reference_results.py --launcher joblib --n-jobs 2
    python scripts/reference_results.py --quick          # tiny dataset: outputs/reference_quick/
    python scripts/reference_results.py --skip-runs      # tables and figures from existing runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from ttabench import plot  # noqa: E402
from ttabench.compare import caption, render, unfinished  # noqa: E402
from ttabench.results import collect  # noqa: E402
from ttabench.sensitivity import sensitivity_table  # noqa: E402
from ttabench.tables import build, configurations, select  # noqa: E402

METHODS = ("source", "bn", "alpha", "ema", "rbn", "unmix")
STREAMS = ("iid", "dirichlet", "sorted", "continual", "ptta", "mixed", "mixed_dirichlet")
SEEDS = (2020, 2021, 2022)
SMALL_DELTA = "stream.delta=0.01"  # the second dirichlet point (same preset, other delta)
BS1_CAP = "dataset.n_per_domain=500"  # batch size 1 is 64x more forward passes
# Quick: 3 corruptions x 200 images, for batch size 1 too (Dirichlet draws with fewer than ~200
# samples per visit often fail to give 10 chunks of min_chunk=10 samples).
QUICK = ("dataset.corruptions=[gaussian_noise,defocus_blur,contrast]", "dataset.n_per_domain=200")
BEGIN, END = "<!-- reference:begin -->", "<!-- reference:end -->"
ORDER = {"method": list(METHODS), "stream": list(STREAMS)}
# The adapting methods' grid (--grid methods).
ADAPTING = ("source", "tent", "eta", "eata", "sar", "deyo", "lame")
ADAPTING_NORMS = ("bn", "unmix")
ADAPTING_STREAMS = ("iid", "dirichlet", "continual", "ptta", "mixed")
ADAPTING_ORDER = {
    "method": list(ADAPTING),
    "stream": list(ADAPTING_STREAMS),
    "norm": ["source", *ADAPTING_NORMS],
}
# The memory and teacher methods' grid (--grid memory): each under its own norm and under unmix.
MEMORY = ("source", "bn", "tent", "rotta", "note", "cotta", "roid")
MEMORY_STREAMS = ("iid", "dirichlet", "ptta", "mixed_dirichlet")
MEMORY_ORDER = {"method": list(MEMORY), "stream": list(MEMORY_STREAMS)}
# The real-image offline benchmark (--grid fashion): Fashion-MNIST-C with its own source model,
# every method on its own default norm (issue "First run and fidelity").
FASHION = (
    "source", "bn", "alpha", "ema", "rbn", "unmix", "tent", "eta", "eata", "sar", "deyo",
    "lame", "rotta", "note", "cotta", "roid",
)  # fmt: skip
FASHION_STREAMS = ("iid", "dirichlet", "continual")
FASHION_ORDER = {"method": list(FASHION), "stream": list(FASHION_STREAMS)}
FASHION_DATA = ("model=fashion_resnet8", "dataset=fashionmnistc")
# The evaluation protocols' grid (--grid protocols): the four methods the issue names first.
PROTOCOL_METHODS = (("tent", "eta", "sar", "rotta"), ("eata", "deyo", "lame", "roid"))
PROTOCOLS = ("online", "episodic", "compute_aware")  # and oracle_selection, at ORACLE_STEPS:
ORACLE_STEPS = 3  # 4 method calls a batch; the default 10 (TTAB's CIFAR-10-C) costs 11, too many
# for this grid on 2 CPU cores (about 10 min a run)
PROTOCOL_STREAMS = ("iid", "dirichlet")
PROTOCOL_ORDER = {
    "method": ["source", "bn", *(m for block in PROTOCOL_METHODS for m in block)],
    "protocol": [*PROTOCOLS[:2], "oracle_selection", PROTOCOLS[2]],
    "stream": list(PROTOCOL_STREAMS),
}
# The outliers grid (--grid outliers): STAMP's open world, 20 % outliers (STAMP's 2,500 per 10,000
# images) from the embedded unseen shapes, and the same streams without them (ratio 0).
OUTLIER_METHODS = ("source", "bn", "tent", "eata", "sar", "rotta", "stamp")
OUTLIER_STREAMS = ("iid", "dirichlet")
OUTLIER_RATIOS = ("0.2", "0.0")
OUTLIER_ORDER = {"method": list(OUTLIER_METHODS), "stream": list(OUTLIER_STREAMS)}
# The sensitivity grid (--grid sensitivity): TENT's learning rate, tested on the 15 corruptions and
# selected on the four held-out ones that TENT's authors advise tuning on.
HELDOUT = "dataset.corruptions=[speckle_noise,gaussian_blur,spatter,saturate]"
SENSITIVITY = ("+sweep=sensitivity_lr", "method=tent", "consistency=true")
SENSITIVITY_KEY = "method.optim.lr"
COSTS = {  # summary column -> table column
    "forwards_per_sample": "forwards / sample",
    "backwards_per_sample": "backwards / sample",
    "seconds_per_sample": "ms / sample",
    "peak_rss_mb": "peak RSS (MB)",
    "recoveries": "recoveries / run",
    "nonfinite_loss": "non-finite losses / run",
}


def sweeps(methods, streams, seeds, quick: bool) -> list[list[str]]:
    """The ``ttabench run -m`` override lists of the grid (4 sweeps into one directory)."""
    m, s = f"method={','.join(methods)}", f"stream={','.join(streams)}"
    all_seeds, one_seed = f"seed={','.join(map(str, seeds))}", f"seed={seeds[0]}"
    tiny = list(QUICK) if quick else []
    bs1 = ["stream.batch_size=1", *([] if quick else [BS1_CAP])]
    grid = [[m, s, all_seeds], [m, "stream=dirichlet", SMALL_DELTA, all_seeds]]
    grid += [[m, s, one_seed, *bs1], [m, "stream=dirichlet", SMALL_DELTA, one_seed, *bs1]]
    if "dirichlet" not in streams:
        grid = [g for g in grid if SMALL_DELTA not in g]
    return [[*g, *tiny] for g in grid]


def method_sweeps(seeds, n_per_domain: int, quick: bool) -> list[list[str]]:
    """The adapting methods' grid: every method under every norm, plus the source baselines."""
    common = [f"stream={','.join(ADAPTING_STREAMS)}", f"seed={','.join(map(str, seeds))}"]
    common += list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    norms = f"norm={','.join(ADAPTING_NORMS)}"
    return [
        [f"method={','.join(ADAPTING)}", norms, *common],
        ["method=source,lame", "norm=source", *common],
    ]


def memory_sweeps(seeds, n_per_domain: int, quick: bool) -> list[list[str]]:
    """The memory methods' grid: native norms (each method's YAML default; source = frozen,
    bn = test-batch BN), the same under ``norm=unmix`` (source + unmix = UnMix-TNS alone), and
    NOTE on its IABN-trained twin, each over the streams and Dirichlet delta 0.01."""
    adapting = "tent,rotta,note,cotta,roid"
    common = [f"seed={','.join(map(str, seeds))}"]
    common += list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    blocks = [
        [f"method=source,bn,{adapting}"],
        [f"method=source,{adapting}", "norm=unmix"],
        ["method=note", "model=embedded_iabn"],
    ]
    streams = [[f"stream={','.join(MEMORY_STREAMS)}"], ["stream=dirichlet", SMALL_DELTA]]
    return [[*block, *stream, *common] for stream in streams for block in blocks]


def fashion_sweeps(seeds, n_per_domain: int, quick: bool) -> list[list[str]]:
    """Every method on its default norm x {iid, dirichlet 0.1, continual} on Fashion-MNIST-C
    with the Fashion-MNIST source model (needs the clean Fashion-MNIST test and train files)."""
    common = [f"seed={','.join(map(str, seeds))}", *FASHION_DATA]
    common += list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    return [[f"method={','.join(FASHION)}", f"stream={','.join(FASHION_STREAMS)}", *common]]


def protocol_sweeps(seeds, n_per_domain: int, quick: bool) -> list[list[str]]:
    """The baselines (online only), then each block of methods under every protocol."""
    common = [f"stream={','.join(PROTOCOL_STREAMS)}", f"seed={','.join(map(str, seeds))}"]
    common += list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    protocols = f"protocol={','.join(PROTOCOLS)}"
    first, then = (f"method={','.join(block)}" for block in PROTOCOL_METHODS)
    passes = ["protocol=compute_aware", "protocol.cost=passes"]  # machine-independent C
    oracle = ["protocol=oracle_selection", f"protocol.n_steps={ORACLE_STEPS}"]
    return [
        ["method=source,bn", *common],
        [first, protocols, *common],
        [first, *passes, *common],
        [first, *oracle, *common],
        [then, protocols, *common],
        [then, *oracle, *common],
    ]


def outlier_sweeps(seeds, n_per_domain: int, quick: bool) -> list[list[str]]:
    """Every method with 20 % outliers, then without (STAMP, 19 forwards a batch, last)."""
    common = [f"stream={','.join(OUTLIER_STREAMS)}", f"seed={','.join(map(str, seeds))}"]
    common += list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    fast = f"method={','.join(OUTLIER_METHODS[:-1])}"
    return [
        [method, f"stream.outliers.ratio={ratio}", *common]
        for ratio in OUTLIER_RATIOS
        for method in (fast, "method=stamp")
    ]


def sensitivity_sweeps(n_per_domain: int, quick: bool) -> dict[str, list[list[str]]]:
    """Sweep sub-directory -> its override lists: the test corruptions and the held-out ones."""
    size = list(QUICK) if quick else [f"dataset.n_per_domain={n_per_domain}"]
    heldout = [*size[1:], HELDOUT] if quick else [*size, HELDOUT]
    return {"test": [[*SENSITIVITY, *size]], "heldout": [[*SENSITIVITY, *heldout]]}


def write_fashion_tables(runs, out: Path) -> dict[str, str]:
    """Error tables (method x stream; method x corruption per stream) and the cost table."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    texts = {"fashion_streams.md": _markdown(runs, ["method", "norm"], "stream", FASHION_ORDER)}
    for stream in FASHION_STREAMS:
        chosen = select(runs, {"stream": [stream]})
        if len(chosen):
            texts[f"fashion_corruptions_stream={stream}.md"] = _markdown(
                chosen, ["method"], "domain", FASHION_ORDER
            )
    texts["fashion_costs.md"] = cost_table(runs, FASHION)
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def run_sweeps(grid: list[list[str]], sweep_dir: Path, launcher: list[str], threads: int) -> None:
    for overrides in grid:
        command = [sys.executable, "-m", "ttabench.cli", "run", "-m", *launcher, *overrides]
        command += [f"hydra.sweep.dir={sweep_dir}", "progress=false", f"threads={threads}"]
        print("$", " ".join(command[2:]), flush=True)
        done = subprocess.run(command, cwd=ROOT)
        if done.returncode not in (0, 1):  # 1: some run failed; it is listed under the tables
            sys.exit(f"sweep failed (exit {done.returncode}): {' '.join(overrides)}")


def write_tables(runs, out: Path) -> dict[str, str]:
    """Markdown tables (file name -> text), written to ``out/tables/``."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    texts = {}
    for bs in sorted(runs["batch_size"].dropna().unique()):
        subset = select(runs, {"batch_size": [str(int(bs))]})
        texts[f"streams_bs{int(bs)}.md"] = _markdown(subset, ["method"], "stream")
        parts = []
        for stream in STREAMS:
            chosen = select(subset, {"stream": [stream]})
            if len(chosen):
                parts.append(f"### stream={stream}\n\n{_markdown(chosen, ['method'], 'domain')}")
        texts[f"corruptions_bs{int(bs)}.md"] = "\n\n".join(parts)
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def write_method_tables(runs, out: Path) -> dict[str, str]:
    """Error tables (method x stream, one per norm) and the cost table, to ``out/tables/``."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    texts = {}
    for norm in ADAPTING_ORDER["norm"]:
        chosen = select(runs, {"norm": [norm]})
        if len(chosen):
            texts[f"methods_norm={norm}.md"] = _markdown(
                chosen, ["method"], "stream", ADAPTING_ORDER
            )
    texts["methods_costs.md"] = cost_table(runs)
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def write_memory_tables(runs, out: Path) -> dict[str, str]:
    """Error tables (method x stream) under the native norms and under unmix, NOTE's source
    models, and the cost table, to ``out/tables/``."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    embedded = select(runs, {"model": ["embedded"]})
    native = embedded[embedded["norm"] != "unmix"]
    blocks = {
        "memory_native.md": native,
        "memory_norm=unmix.md": select(embedded, {"norm": ["unmix"]}),
    }
    texts = {
        name: _markdown(chosen, ["method", "norm"], "stream", MEMORY_ORDER)
        for name, chosen in blocks.items()
        if len(chosen)
    }
    note = select(runs, {"method": ["note"]})
    note = note[note["norm"] != "unmix"]
    if len(note):
        texts["memory_note_models.md"] = _markdown(note, ["model"], "stream", MEMORY_ORDER)
    texts["memory_costs.md"] = cost_table(runs, MEMORY)
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def write_protocol_tables(runs, out: Path) -> dict[str, str]:
    """Error by method and protocol per stream, and what each protocol cost, to out/tables/."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    texts = {
        "protocols_streams.md": _markdown(runs, ["method", "protocol"], "stream", PROTOCOL_ORDER),
        "protocols_costs.md": protocol_cost_table(runs),
    }
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def write_outlier_tables(runs, out: Path) -> dict[str, str]:
    """With 20 % outliers: ID error, AUROC, FPR95 and H-score by method and stream; and the ID
    error with outliers against the same streams without them, to ``out/tables/``."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    ratio = pd.to_numeric(runs["stream.outliers.ratio"], errors="coerce").fillna(0)
    mixed = runs[ratio > 0]
    texts = {
        f"outliers_{metric}.md": _markdown(mixed, ["method"], "stream", OUTLIER_ORDER, metric)
        for metric in ("error", "auroc", "h_score", "fpr95")
    }
    texts["outliers_effect.md"] = outlier_effect_table(runs)
    for name, text in texts.items():
        (out / "tables" / name).write_text(text + "\n")
    return texts


def outlier_effect_table(runs) -> str:
    """ID error per method and stream with 20 % outliers and without (means over seeds of the
    ``all`` rows; the streams differ by the outliers, so the two are not one configuration and
    ``compare --against`` would flag them), and the difference."""
    rows = runs[(runs["domain"] == "all") & (runs["status"] == "complete")].copy()
    if rows.empty:
        return "no complete run yet"
    ratio = pd.to_numeric(rows["stream.outliers.ratio"], errors="coerce").fillna(0)
    rows["outliers"] = ratio.map(lambda r: "with" if r > 0 else "without")
    mean = rows.groupby(["method", "stream", "outliers"])["error"].agg(["mean", "count"])
    wide = mean["mean"].unstack("outliers").reindex(columns=["with", "without"])
    seeds = mean["count"].unstack("outliers").min(axis=1)
    table = pd.DataFrame(
        {
            "ID error, 20 % outliers": wide["with"],
            "ID error, none": wide["without"],
            "Δ": wide["with"] - wide["without"],
            "seeds": seeds.astype(int),
        }
    ).reset_index()
    rank = {k: {v: i for i, v in enumerate(OUTLIER_ORDER[k])} for k in ("method", "stream")}
    table = table.sort_values(
        ["stream", "method"], key=lambda s: s.map(rank[s.name]).fillna(len(rank[s.name]))
    )
    caption = (
        "ID error % with 20 % outliers and on the same stream without them (mean over seeds; "
        "outliers never count in the error; Δ = with - without)"
    )
    return f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.1f')}"


def protocol_cost_table(runs) -> str:
    """Per method and protocol (mean over streams and seeds): forwards and backwards per sample,
    the share of samples answered without the method, its measured cost ratio, ms per sample."""
    rows, _, _ = configurations(runs[runs["domain"] == "all"])  # protocols labelled by knobs
    if rows.empty:
        return "no complete run yet"
    rows["seconds_per_sample"] = rows["seconds_per_sample"] * 1000
    columns = {
        "forwards_per_sample": "forwards / sample",
        "backwards_per_sample": "backwards / sample",
        "skipped_fraction": "skipped fraction",
        "relative_cost": "cost ratio C (adapted batches)",
        "seconds_per_sample": "ms / sample",
    }
    table = rows.groupby(["method", "protocol"])[list(columns)].mean().reset_index()
    rank = {k: {v: i for i, v in enumerate(PROTOCOL_ORDER[k])} for k in ("method", "protocol")}
    base = table["protocol"].str.split(" ").str[0]  # compute_aware (cost=passes): compute_aware
    table = table.assign(m=table["method"].map(rank["method"]), p=base.map(rank["protocol"]))
    table = table.sort_values(["m", "p", "protocol"]).drop(columns=["m", "p"])
    caption = (
        f"Cost per sample by protocol (mean over {len(rows)} complete runs: streams x seeds; "
        "1 torch thread per run, 2-3 runs in parallel on 2 CPU cores, so ms / sample is noisy; "
        "compute_aware's C: measured (the method's time on a batch over one forward of its "
        "current model) or passes (forwards + 2 x backwards per sample))"
    )
    return f"{caption}\n\n{table.rename(columns=columns).to_markdown(index=False, floatfmt='.3g')}"


def cost_table(runs, methods=ADAPTING) -> str:
    """Mean cost per (norm, method) over every complete run's ``all`` row (all streams and
    seeds): forwards and backwards per sample, milliseconds per sample, peak RSS, recoveries."""
    rows = runs[(runs["domain"] == "all") & (runs["status"] == "complete")].copy()
    if rows.empty:
        return "no complete run yet"
    rows["seconds_per_sample"] = rows["seconds_per_sample"] * 1000
    rank = {m: i for i, m in enumerate(methods)}
    table = rows.groupby(["norm", "method"])[list(COSTS)].mean().reset_index()
    norms = {n: i for i, n in enumerate(sorted(table["norm"].unique()))}
    table = table.sort_values(
        ["method", "norm"], key=lambda c: c.map(rank if c.name == "method" else norms)
    )
    table = table.rename(columns=COSTS)
    caption = (
        f"Cost per sample (mean over {len(rows)} complete runs: streams x seeds; method time "
        "only, 1 torch thread per run, 2 runs in parallel on 2 CPU cores)"
    )
    return f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.3g')}"


def write_figures(runs, out: Path, online: bool = True) -> list[Path]:
    """The figures; ``online=False`` keeps the online figures already there (their runs'
    ``online.csv`` files are not at hand) and lists them with the new ones."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for old in figures.glob("*.png"):  # the set of figures follows the grid
        if online or not old.name.startswith("online_"):
            old.unlink()
    order = ORDER["method"]
    if online:
        paths = plot.write(plot.plot_online(runs, order=order), figures)
    else:
        paths = sorted(figures.glob("online_*.png"))
    paths += plot.write(plot.plot_delta(runs, order=order), figures)
    bs64 = select(runs, {"batch_size": ["64"]})
    paths += plot.write(plot.plot_corruptions(bs64 if len(bs64) else runs, order=order), figures)
    return paths


def write_readme(
    out: Path,
    texts: dict[str, str],
    figures: list[Path],
    command: str,
    readme: Path | None = None,
    markers: tuple[str, str] = (BEGIN, END),
    heading: str = "Reference results",
    main_prefix: str = "streams_",
    note: str = "",
) -> None:
    """Replace the generated block of ``readme`` (default ``out/README.md``; created if
    missing) between ``markers``; the tables named ``main_prefix*`` are shown in full."""
    readme = readme or out / "README.md"
    rel = out.relative_to(readme.parent) if out != readme.parent else Path(".")
    links = "\n".join(f"- [{p.stem}]({rel / 'figures' / p.name})" for p in sorted(figures))
    tables = "\n".join(f"- [{name}]({rel / 'tables' / name})" for name in texts)
    main = [n for n in texts if n.startswith(main_prefix)]
    block = "\n\n".join(
        [
            markers[0],
            f"Generated by `{command}` on {dt.date.today().isoformat()}; do not edit by hand."
            + note,
            *(f"#### {n.removesuffix('.md')}\n\n{texts[n]}" for n in main),
            f"Tables (rebuild any other with `ttabench compare {_from_root(out)} ...`):"
            f"\n\n{tables}",
            *([f"Figures:\n\n{links}"] if figures else []),
            markers[1],
        ]
    )
    text = readme.read_text() if readme.exists() else ""
    begin, end = markers
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = f"{text.rstrip()}\n\n## {heading}\n\n{block}\n".lstrip()
    readme.write_text(text)


def _from_root(out: Path) -> Path:
    """``out/summaries.csv.gz`` as typed from the repository root (where the commands run)."""
    path = out.resolve() / "summaries.csv.gz"
    return path.relative_to(ROOT) if ROOT in path.parents else path


def _markdown(runs, rows: list[str], column: str, order: dict = ORDER, value: str = "error") -> str:
    """Caption, Markdown table and notes, as `ttabench compare --format markdown` prints them."""
    try:
        table = build(runs, rows=rows, column=column, order=order, value=value)
    except ValueError as exc:  # e.g. every run of the block failed
        return f"no table: {exc}" + "".join(f"\n- {n}" for n in unfinished(runs))
    notes = "".join(f"\n- {note}" for note in [*table.notes, *unfinished(runs)])
    text = f"{caption(table, 'all')}\n\n{render(table, 'markdown')}"
    return text + (f"\n{notes}" if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny dataset (a smoke test)")
    parser.add_argument("--out", type=Path, help="[results/; --quick: outputs/reference_quick]")
    parser.add_argument("--sweep-dir", type=Path, help="[outputs/reference(_quick)/runs]")
    parser.add_argument("--launcher", default="basic", choices=["basic", "joblib"])
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib: parallel runs [2]")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run [1]: these small models gain little from more, and on a "
        "shared CPU several threads per run are several times slower; use --n-jobs instead",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--skip-runs", action="store_true", help="only tables and figures")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="norms grid: a summaries.csv.gz of an earlier grid whose rows stand in for the "
        "methods not in --methods (tables and summary figures; the online figures, which "
        "need every run's online.csv, are left as they are)",
    )
    parser.add_argument(
        "--grid",
        default="norms",
        choices=["norms", "methods", "memory", "fashion", "protocols", "sensitivity", "outliers"],
    )
    parser.add_argument(
        "--n-per-domain",
        type=int,
        help="--grid methods / memory / fashion / protocols / sensitivity / outliers: images "
        "per domain [2000 / 300 / 500 / 1000 / 1000 / 500]",
    )
    args = parser.parse_args(argv)
    if args.reuse is not None and args.grid != "norms":
        parser.error("--reuse applies to the norms grid only")
    methods = args.grid != "norms"
    sizes = {"memory": 300, "fashion": 500, "protocols": 1000, "sensitivity": 1000, "outliers": 500}
    args.n_per_domain = args.n_per_domain or sizes.get(args.grid, 2000)
    sub = "" if args.grid == "norms" else args.grid
    name = f"reference_{sub}" if sub else "reference"
    base = ROOT / "outputs" / (f"{name}_quick" if args.quick else name)
    out = args.out or (base if args.quick else ROOT / "results" / sub)
    sweep_dir = (args.sweep_dir or base / "runs").resolve()
    if args.grid == "sensitivity":
        return sensitivity_main(args, base, out)
    if args.grid == "memory":
        grid = memory_sweeps(args.seeds.split(","), args.n_per_domain, args.quick)
    elif args.grid == "protocols":
        grid = protocol_sweeps(args.seeds.split(","), args.n_per_domain, args.quick)
    elif args.grid == "outliers":
        grid = outlier_sweeps(args.seeds.split(","), args.n_per_domain, args.quick)
    elif args.grid == "fashion":
        grid = fashion_sweeps(args.seeds.split(","), args.n_per_domain, args.quick)
    elif methods:
        grid = method_sweeps(args.seeds.split(","), args.n_per_domain, args.quick)
    else:
        grid = sweeps(
            args.methods.split(","), args.streams.split(","), args.seeds.split(","), args.quick
        )
    if not args.skip_runs:
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
        run_sweeps(grid, sweep_dir, launcher if args.launcher == "joblib" else [], args.threads)
    runs = collect([sweep_dir])
    # Paths relative to the sweep directory: the committed files do not name this machine.
    rel = runs.assign(run_dir=[str(Path(d).relative_to(sweep_dir)) for d in runs["run_dir"]])
    reused = None
    if args.reuse is not None and not methods:  # read as `ttabench compare` reads it
        earlier = collect([args.reuse])
        reused = earlier[~earlier["method"].isin(args.methods.split(","))]
        rel = pd.concat([rel, reused], ignore_index=True)
        runs = pd.concat([runs, reused], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    # gzip (~10x smaller; pandas and `ttabench compare` read it as is), mtime 0: same rows, same
    # bytes, so a regeneration without changes leaves git clean.
    gz = {"method": "gzip", "mtime": 0}
    columns = [c for c in rel.columns if "." not in c]  # collect re-expands the knobs
    rel[columns].to_csv(out / "summaries.csv.gz", index=False, compression=gz)
    command = "python scripts/reference_results.py" + (" --quick" if args.quick else "")
    if methods:
        writer = {
            "memory": write_memory_tables,
            "fashion": write_fashion_tables,
            "protocols": write_protocol_tables,
            "outliers": write_outlier_tables,
        }
        texts = writer.get(args.grid, write_method_tables)(rel, out)
        command += f" --grid {args.grid} --n-per-domain {args.n_per_domain}"
        if args.seeds != ",".join(map(str, SEEDS)):
            command += f" --seeds {args.seeds}"
        if args.out is not None:
            command += f" --out {args.out}"
        # results/README.md for the reference itself; a README of its own for --quick or --out.
        own = args.quick or args.out is not None
        readme = out / "README.md" if own else out.parent / "README.md"
        markers = (f"<!-- {args.grid}:begin -->", f"<!-- {args.grid}:end -->")
        heading, prefix = {
            "memory": ("Memory and teacher methods", "memory_"),
            "fashion": ("Fashion-MNIST-C: the real-image offline benchmark", "fashion_streams"),
            "protocols": ("Evaluation protocols", "protocols_"),
            "outliers": ("Outliers in the stream", "outliers_"),
        }.get(args.grid, ("Adapting methods", "methods_"))
        write_readme(out, texts, [], command, readme, markers, heading, prefix)
        shown = [text for name, text in texts.items() if name.endswith(("costs.md", "effect.md"))]
        print(shown[0] if shown else "")
        figures = []
    else:
        texts = write_tables(rel, out)
        figures = write_figures(runs, out, online=reused is None)
        note = ""
        if reused is not None:
            kept = ", ".join(sorted(reused["method"].unique()))
            command += f" --methods {args.methods} --reuse {args.reuse}"
            note = (
                f" The rows of {kept} come from the earlier grid (their code path did not "
                "change); the online figures are that grid's, drawn before the alpha/ema "
                "defaults changed."
            )
        write_readme(out, texts, figures, command, note=note)
    print(f"wrote {out}/summaries.csv.gz, {len(texts)} tables, {len(figures)} figures, README.md")
    return 0


def sensitivity_main(args, base: Path, out: Path) -> int:
    """Run (unless --skip-runs) the test and held-out sweeps, then write the summaries, the
    sensitivity table and the figure to ``out`` and its block of results/README.md."""
    dirs = {name: ((args.sweep_dir or base) / name).resolve() for name in ("test", "heldout")}
    if not args.skip_runs:
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
        launcher = launcher if args.launcher == "joblib" else []
        for name, grid in sensitivity_sweeps(args.n_per_domain, args.quick).items():
            run_sweeps(grid, dirs[name], launcher, args.threads)
    found = {name: collect([d]) for name, d in dirs.items()}
    out.mkdir(parents=True, exist_ok=True)
    gz = {"method": "gzip", "mtime": 0}
    for name, runs in found.items():
        rel = runs.assign(run_dir=[str(Path(d).relative_to(dirs[name])) for d in runs["run_dir"]])
        columns = [c for c in rel.columns if "." not in c]
        file = "summaries.csv.gz" if name == "test" else f"summaries_{name}.csv.gz"
        rel[columns].to_csv(out / file, index=False, compression=gz)
    table, notes = sensitivity_table(found["test"], SENSITIVITY_KEY, heldout=found["heldout"])
    caption = (
        f"TENT: error % (mean ± std over seeds) against {SENSITIVITY_KEY}, on the 15 test "
        "corruptions; held-out: the same sweep on speckle_noise, gaussian_blur, spatter, saturate"
    )
    bullets = "".join(f"\n- {n}" for n in [*notes, *unfinished(found["test"])])
    text = f"{caption}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n{bullets}"
    (out / "tables").mkdir(exist_ok=True)
    (out / "tables" / "sensitivity_lr.md").write_text(text + "\n")
    figures = out / "figures"
    for old in figures.glob("*.png"):
        old.unlink()
    paths = plot.write(
        plot.plot_sensitivity(found["test"], line="stream", key=SENSITIVITY_KEY), figures
    )
    command = "python scripts/reference_results.py --grid sensitivity"
    command += f" --n-per-domain {args.n_per_domain}" + (" --quick" if args.quick else "")
    readme = out / "README.md" if (args.quick or args.out is not None) else out.parent / "README.md"
    markers = ("<!-- sensitivity:begin -->", "<!-- sensitivity:end -->")
    heading = "Hyperparameter sensitivity and selection"
    write_readme(out, {"sensitivity_lr.md": text}, paths, command, readme, markers, heading,
                 "sensitivity_lr")  # fmt: skip
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
