"""`easyhard analyze similarity`: do easy examples look alike? (easyhard.similarity)

    easyhard analyze similarity runs/fm/convnet-run0 --dataset fashion-mnist --out sim/
    easyhard analyze similarity runs/fm/merged.npz --features runs/fm/resnet20-run0 --out sim/

Attached to the `analyze` group when easyhard.cli imports this module. Every check (the
configuration, the scores input, the dataset and its fingerprint, the feature model, the device,
where the output goes) runs before any image is read or anything is written.
"""

from __future__ import annotations

import os
import sys

import click

from .cli import (
    _load_dataset,
    _output_options,
    analyze,
    check_same_data,
    config_options,
    echo_outputs,
    make_config,
)
from .config import SimilarityConfig


@analyze.command("similarity")
@click.argument("scores", type=click.Path())
@config_options(SimilarityConfig)
@_output_options
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
    from .io import check_disjoint, check_replaceable
    from .scores import load_scores
    from .similarity import (
        FORMAT,
        MANIFEST,
        find_feature_model,
        format_table,
        load_feature_model,
        resolve_score_path,
        score_source,
        write_outputs,
    )
    from .similarity import (
        analyze as analyze_similarity,
    )
    from .train import resolve_device

    cfg = make_config(SimilarityConfig, settings)
    score_file = resolve_score_path(scores)
    table = load_scores(score_file, cfg.window)
    dataset = _load_dataset(cfg)
    check_same_data(score_file, table, cfg, dataset)
    if cfg.score not in table.scores:
        raise click.ClickException(
            f"{score_file} holds no {cfg.score!r} score (it has {', '.join(sorted(table.scores))})"
        )
    device = resolve_device(cfg.device)
    source = score_source(score_file, table.metadata)
    feature_source = find_feature_model(cfg.features, source, dataset.fingerprint)
    model, info = None, {}
    if feature_source is not None:
        model, info = load_feature_model(feature_source.checkpoint, dataset, device)
        feature_source.arch = feature_source.arch or info["arch"]
    check_disjoint(
        out_dir,
        {
            "scores input": score_file,
            "dataset": getattr(dataset, "base", None) or dataset.root,
            "file list": cfg.file_list,
            "feature model": feature_source and feature_source.checkpoint,
        },
    )
    check_replaceable(out_dir, MANIFEST, FORMAT, force)

    def log(message: str) -> None:
        if not quiet and not as_json:
            click.echo(message, err=True)

    if feature_source is not None:
        log(f"features: {feature_source.describe()}")
    result = analyze_similarity(
        table,
        dataset,
        fraction=cfg.fraction,
        score=cfg.score,
        sample_size=cfg.sample_size,
        repeats=cfg.repeats,
        pool_size=cfg.pool_size,
        neighbours=cfg.neighbours,
        max_classes=cfg.max_classes,
        pixel_size=cfg.pixel_size,
        grid_examples=cfg.grid_examples,
        seed=cfg.seed,
        feature_model=model,
        feature_source=feature_source,
        device=device,
        batch_size=cfg.batch_size,
        crop=info.get("crop", 224),
        workers=cfg.workers,
        log=log,
    )
    result.record["score_file"] = os.path.abspath(score_file)
    result.record["window"] = cfg.window
    result.record["scoring_runs"] = [os.path.abspath(r) for r in source.runs]
    record = write_outputs(result, out_dir, force)
    echo_outputs(
        record, format_table(record), out_dir, [MANIFEST, *record["figures"]], as_json, quiet
    )
    sys.stdout.flush()
