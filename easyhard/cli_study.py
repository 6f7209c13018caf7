"""`easyhard study`: the main job. Score, compare, measure similarity, and end on one page.

    easyhard study --out runs/fashion-mnist          # Fashion-MNIST, resnet8 + convnet, 2 epochs

Steps, each an ordinary easyhard command whose output lands in a sub-folder of --out:

1. ``runs/``: `easyhard score` with the given architectures (one run each, same seeds), so each
   pair of them differs only in architecture;
2. ``seeds/``: `easyhard score` of the first architecture with the next seed(s), so that pair
   differs only in seed (initialisation and data order);
3. ``overlap/``: `easyhard analyze overlap` of all runs (shared across architectures, against
   chance, against seeds: "how much of it is SGD?");
4. ``similarity/``: `easyhard analyze similarity` of the first architecture's scores, with
   features from the second architecture when there is one (so "easy" is not defined by the
   model that measures it);
5. ``report/``: `easyhard report` of all of it; the command ends by printing where
   report.html is.

``--resume`` continues a killed study (finished runs are reused, analyses are redone); analyses
and the report inside --out are easyhard's own outputs and are replaced on every run.
"""

from __future__ import annotations

import dataclasses
import os

import click

from .cli import NON_CONFIG_OPTIONS, config_options, main, make_config
from .config import StudyConfig


def _dataset_args(cfg: StudyConfig) -> list[str]:
    args = ["--dataset", cfg.dataset]
    for name in ("data_dir", "file_list"):
        if getattr(cfg, name) is not None:
            args += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    if cfg.dataset == "synthetic":
        args += [
            "--num-samples",
            str(cfg.num_samples),
            "--num-classes",
            str(cfg.num_classes),
            "--image-size",
            str(cfg.image_size),
            "--synthetic-seed",
            str(cfg.synthetic_seed),
        ]
    return args


@main.command("study")
@config_options(StudyConfig)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder: runs/, seeds/, overlap/, similarity/, report/.",
)
@click.option("--resume", is_flag=True, help=NON_CONFIG_OPTIONS["--resume"] + ".")
@click.option("--quiet", is_flag=True, help=NON_CONFIG_OPTIONS["--quiet"] + ".")
def study_cmd(out_dir, resume, quiet, **settings):
    """The main job: score (architectures, and one of them with more seeds), analyse overlap and
    similarity, and write the report; prints where report.html is.

    \b
    Example:
        easyhard study --out runs/fashion-mnist
        easyhard study --arch convnet --arch resnet20 --epochs 4 --seed-runs 2 --out runs/fm4
    """
    from .train import train_job

    cfg = make_config(StudyConfig, settings)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not resume:
        raise click.ClickException(
            f"{out_dir} is not empty: pass --resume to continue the study "
            "there, or choose another folder"
        )
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(f"== {msg}", err=True))
    score_fields = {f.name for f in dataclasses.fields(StudyConfig)} - {"seed_runs"}
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k in score_fields}
    from .config import ScoreConfig

    arch_job = ScoreConfig(**{**base, "runs": 1})
    say(f"1/5 scoring {', '.join(cfg.archs)} (seed {cfg.seed})")
    train_job(arch_job, os.path.join(out_dir, "runs"), resume=resume, quiet=quiet)
    folders = [os.path.join(out_dir, "runs")]
    if cfg.seed_runs:
        seed_job = ScoreConfig(
            **{**base, "archs": (cfg.archs[0],), "runs": cfg.seed_runs, "seed": cfg.seed + 1}
        )
        say(f"2/5 scoring {cfg.archs[0]} with seed(s) {cfg.seed + 1}..{cfg.seed + cfg.seed_runs}")
        train_job(seed_job, os.path.join(out_dir, "seeds"), resume=resume, quiet=quiet)
        folders.append(os.path.join(out_dir, "seeds"))
    analyses = []
    run_count = len(cfg.archs) + cfg.seed_runs
    if run_count >= 2:
        say("3/5 analyze overlap")
        main.main(
            [
                "analyze",
                "overlap",
                *folders,
                "--window",
                str(cfg.window or cfg.epochs),
                "--out",
                os.path.join(out_dir, "overlap"),
                "--force",
                "--quiet",
            ],
            standalone_mode=False,
        )
        analyses.append(os.path.join(out_dir, "overlap"))
    say("4/5 analyze similarity")
    first = os.path.join(out_dir, "runs", f"{cfg.archs[0]}-run0")
    extra = []
    if len(cfg.archs) > 1:
        extra = ["--features", os.path.join(out_dir, "runs", f"{cfg.archs[1]}-run0")]
    main.main(
        [
            "analyze",
            "similarity",
            first,
            *_dataset_args(cfg),
            *extra,
            "--device",
            cfg.device,
            "--out",
            os.path.join(out_dir, "similarity"),
            "--force",
            "--quiet",
        ],
        standalone_mode=False,
    )
    analyses.append(os.path.join(out_dir, "similarity"))
    say("5/5 report")
    from .report import write_report

    report = os.path.join(out_dir, "report")
    write_report(
        [*folders, *analyses],
        report,
        title=f"easyhard study: {cfg.dataset}",
        window=cfg.window,
        force=True,
    )
    click.echo(f"report: {os.path.abspath(os.path.join(report, 'report.html'))}")
