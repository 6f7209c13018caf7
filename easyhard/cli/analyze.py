"""`easyhard analyze overlap|similarity`: are easy and hard examples shared across runs, and do
they look alike? Thin layers over easyhard.overlap.run_overlap and
easyhard.similarity.run_similarity."""

from __future__ import annotations

import sys

import click

from ..config import OverlapConfig, SimilarityConfig
from ._base import EasyhardGroup, config_options, echo_outputs, make_config, output_options


@click.group("analyze", cls=EasyhardGroup)
def analyze() -> None:
    """Analyse score runs: are easy and hard examples shared, and do they look alike?"""


@analyze.command("overlap")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@config_options(OverlapConfig)
@output_options()
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
    from ..overlap import format_table, run_overlap, written

    record = run_overlap(make_config(OverlapConfig, settings), inputs, out_dir, force=force)
    echo_outputs(record, format_table(record), out_dir, written(record), as_json, quiet)


@analyze.command("similarity")
@click.argument("scores", type=click.Path())
@config_options(SimilarityConfig)
@output_options()
def similarity_cmd(scores, out_dir, force, as_json, quiet, **settings):
    """Do easy examples look alike? Spread of the easiest and hardest examples against
    class-matched random sets, in pixel and feature space, with intervals; local density
    against easiness. SCORES: a statistics file (a run's scores.npz), a merged scores file
    (merged.npz), a run folder or
    an `easyhard score` output folder. Writes similarity.json and PNG figures into --out.

    \b
    Example:
        easyhard analyze similarity runs/fm/convnet-run0 --dataset fashion-mnist --out sim/
    """
    from ..similarity import format_table, run_similarity, written

    def log(message: str) -> None:
        if not quiet and not as_json:
            click.echo(message, err=True)

    cfg = make_config(SimilarityConfig, settings)
    record = run_similarity(cfg, scores, out_dir, force=force, log=log)
    echo_outputs(record, format_table(record), out_dir, written(record), as_json, quiet)
    sys.stdout.flush()


COMMANDS = (analyze,)
