"""`easyhard experiment removal|compression`: train afresh on subsets chosen by difficulty (thin
layers over easyhard.experiments.run_removal and run_compression; options
generated from easyhard.config.RemovalConfig and CompressionConfig).

    easyhard experiment removal runs/fm/merged.npz --dataset fashion-mnist --arch convnet \\
        --fractions 0.1,0.3,0.5,0.7,0.9 --seeds 3 --budget epochs,steps --out runs/removal
"""

from __future__ import annotations

import json

import click

from ..config import CompressionConfig, RemovalConfig
from ._base import EasyhardGroup, config_options, make_config, output_options


@click.group("experiment", cls=EasyhardGroup)
def experiment() -> None:
    """Train on subsets chosen by difficulty: removal and compression curves."""


no_train_option = click.option(
    "--no-train",
    "no_train",
    is_flag=True,
    help="Train nothing: write the tables and figures from the trainings finished so far (safe "
    "beside a running worker).",
)


def _finish(summary: dict, quiet: bool, as_json: bool) -> None:
    """The experiment's summary as JSON, or its tables and the files written."""
    if as_json:
        summary.pop("summary")
        click.echo(json.dumps(summary, indent=1))
    elif not quiet:
        click.echo("")
        click.echo(summary["summary"])
        click.echo(f"written: {', '.join(summary['files'].values())}")


@experiment.command("removal")
@click.argument("score_file", type=click.Path(exists=True, dir_okay=False))
@config_options(RemovalConfig)
@output_options(
    "The experiment's folder; the same command again continues it.",
    force="Start afresh: replace an earlier easyhard experiment in --out (never anything else).",
    quiet="No progress lines and no table.",
)
@no_train_option
def removal_cmd(score_file, out_dir, force, quiet, as_json, no_train, **settings):
    """Remove the easiest, hardest or a random fraction of the training set and train afresh.

    Trains every (fraction, order, seed) and the full data as the reference with the recipe of
    `easyhard score` (one architecture), and writes results.jsonl, summary.md and removal.png
    into --out. The same command again continues a stopped experiment; more seeds, fractions,
    orders, scores or budgets add trainings; other settings are refused.

    \b
    Example:
        easyhard experiment removal runs/fm/merged.npz --dataset fashion-mnist --arch convnet \\
            --fractions 0.1,0.3,0.5 --seeds 3 --budget epochs,steps --out runs/removal
    """
    from ..experiments import run_removal

    cfg = make_config(RemovalConfig, settings)
    summary = run_removal(
        cfg, score_file, out_dir, force=force, quiet=quiet or as_json, train_missing=not no_train
    )
    _finish(summary, quiet, as_json)


@experiment.command("compression")
@click.argument("score_files", nargs=-1, metavar="[LABEL=]SCORES...")
@config_options(CompressionConfig)
@output_options(
    "The experiment's folder (a removal experiment's folder shares its trainings); the same "
    "command again continues it.",
    force="Start afresh: replace an earlier compression experiment in --out (never anything "
    "else; a removal experiment there stays).",
    quiet="No progress lines and no table.",
)
@no_train_option
def compression_cmd(score_files, out_dir, force, quiet, as_json, no_train, **settings):
    """Keep a fraction of the training set by easiness (or another ranking) and train on it.

    Trains every (kept fraction, strategy, ranking, seed) and the full data as the reference,
    and weighs accuracy against cost: each ranking's scoring time (from its runs' metrics) plus
    the subset's training time. SCORES are statistics files (a run's scores.npz) or merged
    scores files (merged.npz),
    each optionally labelled LABEL=FILE; --window 1,2 ranks by their first epochs too (cheaper
    scoring); --external NAME=FILE.npy adds published scores. A --arch other than the scoring
    runs' measures transfer. Writes compression-results.jsonl, compression-summary.md,
    compression.png and compression-cost.png into --out.

    \b
    Example:
        easyhard experiment compression runs/fm/convnet-run0/scores.npz --window 1,2 \\
            --dataset fashion-mnist --arch convnet --keep 0.5,0.7 --seeds 3 --out runs/removal
    """
    from ..experiments import run_compression

    cfg = make_config(CompressionConfig, settings)
    summary = run_compression(
        cfg, score_files, out_dir, force=force, quiet=quiet or as_json, train_missing=not no_train
    )
    _finish(summary, quiet, as_json)


COMMANDS = (experiment,)
