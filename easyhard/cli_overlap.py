"""`easyhard analyze overlap`: are easy and hard examples shared across runs? (easyhard.overlap)"""

from __future__ import annotations

import click

from .cli import _output_options, analyze, config_options, echo_outputs, make_config
from .config import OverlapConfig


@analyze.command("overlap")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@config_options(OverlapConfig)
@_output_options
def overlap_cmd(inputs, out_dir, force, as_json, quiet, **settings):
    """Compare the easy and hard sets of several runs: pairwise Jaccard against chance, rank
    correlations, consistency across all runs, per class; pairs grouped by what differs.

    INPUTS: statistics files (scores.npz), run folders, or `easyhard score --out` folders
    (expanded to their runs).
    Writes overlap.json, overlap.txt, pairs.png and overlap.png into --out.

    \b
    Example:
        easyhard analyze overlap runs/fm --window 2 --out analysis/overlap
    """
    from .overlap import analyze_overlap, format_table, write_outputs

    cfg = make_config(OverlapConfig, settings)
    result = analyze_overlap(
        list(inputs),
        score=cfg.score,
        window=cfg.window,
        view=cfg.view,
        ps=cfg.ps,
        tie_seed=cfg.tie_seed,
        kendall_max=cfg.kendall_max,
        class_names=_class_names(list(inputs)),
    )
    result = write_outputs(result, out_dir, force=force, inputs=list(inputs))
    echo_outputs(
        result,
        format_table(result),
        out_dir,
        ["overlap.json", "overlap.txt", *result["figures"]],
        as_json,
        quiet,
    )


def _class_names(inputs: list[str]) -> list[str] | None:
    """Class names for the per-class table, when the runs' dataset is Fashion-MNIST (the only
    dataset whose names are known without reading it)."""
    from .datasets import FASHION_MNIST_CLASSES
    from .overlap import expand_inputs
    from .statsfile import read_metadata_block

    try:
        meta = read_metadata_block(expand_inputs(inputs)[0]) or {}
    except ValueError:
        return None
    return list(FASHION_MNIST_CLASSES) if meta.get("dataset") == "fashion-mnist" else None
