"""edgekit predict"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.commands._common import emit, json_option, overwrite_option


@click.command("predict")
@click.argument("bundle", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Labels shown per sample.")
@click.option("--threads", type=int, default=None)
@click.option("--out", type=click.Path(), default=None, help="Write all outputs to this .npz (exit 2 if it exists).")
@overwrite_option
@click.option("--no-verify", is_flag=True,
              help="Skip the bundle's golden-sample check (run once per bundle, runtime and CPU, then cached).")
@json_option
def command(bundle: str, inputs: tuple[str, ...], top_k: int, threads: int | None, out: str | None, overwrite: bool,
            no_verify: bool, as_json: bool) -> None:
    """Run BUNDLE on INPUTS (.npy / .npz / image files). Needs no torch: numpy and the bundle's runtime.

    Before the first prediction on a machine the bundle checks its golden samples (as `edgekit verify`
    does) and refuses to predict, exit 4, when this device computes it differently."""
    import numpy as np

    from edgekit.artifact import check_output, staging_file
    from edgekit.runtime import Bundle, load_inputs
    from edgekit.verify import ensure_verified

    given = [Path(bundle), *(Path(p) for p in inputs)]
    if out:
        check_output(Path(out), overwrite, given, directory=False)  # before any work
    b = Bundle.open(bundle)
    feeds = load_inputs([Path(p) for p in inputs], b.io)
    b.runtime(threads)
    if not no_verify:
        ensure_verified(b, threads)
    pred = b.predict(feeds, top_k=top_k)
    if out:
        with staging_file(Path(out), overwrite, given) as tmp, open(tmp, "wb") as f:
            np.savez(f, **pred.outputs)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    if as_json:
        result = {"bundle": bundle, "target": b.manifest.target.name, "precision": b.manifest.target.precision,
                  "predictions": [[{"label": lab, "score": s} for lab, s in row] for row in pred.labels]
                  if pred.labels is not None else None,
                  "outputs": {k: v.tolist() for k, v in pred.outputs.items()} if pred.labels is None and not out else None}
        emit(result, True)
        return
    if pred.labels is not None:
        for i, row in enumerate(pred.labels):
            sys.stdout.write(f"{i}: " + ", ".join(f"{lab} {s:.3f}" for lab, s in row) + "\n")
    else:
        for name, arr in pred.outputs.items():
            sys.stdout.write(f"{name}: shape {arr.shape}\n")
