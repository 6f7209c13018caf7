"""`easyhard study`: the main job, a thin layer over easyhard.study.run_study: for example
`easyhard study --out runs/fashion-mnist` (Fashion-MNIST, resnet8 + convnet, 2 epochs)."""

from __future__ import annotations

import click

from ..config import StudyConfig
from ._base import NON_CONFIG_OPTIONS, config_options, make_config, output_options


@click.command("study")
@config_options(StudyConfig)
@output_options(
    "Output folder: runs/, seeds/, overlap/, similarity/, report/.",
    resume=True,
    force="Start an earlier study in --out afresh: each step replaces what it wrote (refused "
    "when the folder holds anything else).",
    as_json=None,
    quiet=NON_CONFIG_OPTIONS["--quiet"] + ".",
)
def study_cmd(out_dir, resume, force, quiet, **settings):
    """The main job: score (architectures, and one of them with more seeds), analyse overlap and
    similarity, and write the report; prints where report.html is.

    \b
    Example:
        easyhard study --out runs/fashion-mnist
        easyhard study --arch convnet --arch resnet20 --epochs 4 --seed-runs 2 --out runs/fm4
    """
    from ..study import run_study

    cfg = make_config(StudyConfig, settings)
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(f"== {msg}", err=True))
    click.echo(
        f"report: {run_study(cfg, out_dir, resume=resume, force=force, quiet=quiet, say=say)}"
    )


COMMANDS = (study_cmd,)
