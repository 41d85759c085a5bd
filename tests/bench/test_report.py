"""The benchmark report's pure parts: the Pareto front and the cells of a row."""

from __future__ import annotations

from edgekit.bench.report import COLUMNS, Latency, Row, pareto, row_cells


def test_pareto_front() -> None:
    pts = [(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.8)]
    assert sorted(pareto(pts)) == [0, 1, 3]


def test_pareto_keeps_ties_and_drops_the_dominated() -> None:
    assert sorted(pareto([(1.0, 0.9), (1.0, 0.9), (1.0, 0.8)])) == [0, 1]


def test_row_cells_show_what_ran_and_dashes_for_what_did_not() -> None:
    ok = Row(variant="int8", artifact="a", sha256="0", target="onnxruntime", device="cpu", precision_requested="int8",
             precision="int8", batch=8, threads=2, status="ok",
             latency_ms=Latency(min=0.5, p50=1.25, p90=2.0, p99=3.0, mean=1.4), speedup=2.5,
             speedup_interval=[2.1, 2.9], accuracy=0.9712, accuracy_delta=-0.0031, agreement=0.99,
             agreement_inputs="synthetic", size_bytes=250_000, memory_mb=12.25, macs=3_500_000)
    cells = dict(zip(COLUMNS, row_cells(ok), strict=True))
    assert cells["variant"] == "int8" and cells["batch"] == "8"
    assert (cells["min ms"], cells["p50 ms"], cells["p90 ms"]) == ("0.500", "1.250", "2.000")
    assert cells["speedup"] == "2.50x" and cells["95% interval"] == "2.10-2.90x"
    assert cells["accuracy %"] == "97.12" and cells["Δ acc pts"] == "-0.31"
    assert cells["agree %"] == "99.00*"  # measured on synthetic inputs: marked
    assert cells["size"] == "0.25 MB" and cells["memory"] == "12.2 MB" and cells["MACs"] == "3.5M"
    failed = ok.model_copy(update={"status": "unavailable", "latency_ms": None, "speedup": None, "speedup_interval": None,
                                   "accuracy": None, "accuracy_delta": None, "agreement": None, "size_bytes": 900,
                                   "is_baseline": True, "device": "cuda"})
    cells = dict(zip(COLUMNS, row_cells(failed), strict=True))
    assert cells["variant"] == "int8 (baseline, cuda)" and cells["status"] == "unavailable"
    assert {cells[c] for c in ("min ms", "p50 ms", "speedup", "accuracy %", "agree %")} == {"-"}
    assert cells["size"] == "0.9 kB"
