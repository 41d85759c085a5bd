"""``edgekit demo``: the whole path on the embedded default, in about a minute on 2 cores.

train (small residual CNN on digits) -> compress --recipe int8 -> build for every target available
here -> bench at batch 1 and a large batch (at 8x8 pixels batch 1 is all overhead).
"""

from __future__ import annotations

from pathlib import Path

from edgekit import console
from edgekit.artifact import MANIFEST
from edgekit.bench.report import BenchReport


def _drop_previous_int8(out: Path) -> None:
    """A second demo replaces the first: ``train --overwrite`` keeps child artifacts it did not make,
    so the INT8 child an earlier demo made (compressed from ``out`` by recipe int8) goes first."""
    import json
    import shutil

    child = out / "int8"
    if not (out / MANIFEST).is_file() or not (child / MANIFEST).is_file() or child.is_symlink():
        return
    try:
        lineage = json.loads((child / MANIFEST).read_text()).get("lineage") or {}
    except (OSError, ValueError, AttributeError):
        return
    if lineage.get("parent") == ".." and lineage.get("step") == "compress:int8":
        shutil.rmtree(child)


def demo(out: Path = Path("runs/demo"), epochs: int = 30, batches: tuple[int, ...] = (1, 256),
         min_time: float = 0.5) -> BenchReport:
    from edgekit.bench.compare import BenchRequest, bench
    from edgekit.bench.harness import TimingConfig
    from edgekit.compress import compress
    from edgekit.targets.catalog import CATALOG
    from edgekit.train import TrainConfig, train

    _drop_previous_int8(out)
    console.info("[bold]1/3 train[/bold]: small residual CNN on scikit-learn's digits")
    ckpt = train(TrainConfig(epochs=epochs), out=out, overwrite=True)
    assert ckpt is not None  # noqa: S101 - demo runs in one process
    console.info("[bold]2/3 compress[/bold]: recipe int8 (one portable QDQ graph)")
    int8 = compress(ckpt, "int8", overwrite=True)
    assert int8 is not None  # noqa: S101
    console.info("[bold]3/3 bench[/bold]: the full model and INT8 on every target (unavailable ones say why)")
    targets = [name for name in CATALOG if name != "torch"]
    # one timing process: the demo shows the path; `edgekit bench` pools three for repeatable speedups
    report, _ = bench(int8, BenchRequest(targets=tuple(targets), batches=tuple(batches), timing=TimingConfig(min_time=min_time),
                                         overwrite=True, processes=1))
    assert report is not None  # noqa: S101
    return report
