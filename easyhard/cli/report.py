"""`easyhard report`: one self-contained page from score runs, analyses and experiments (a thin
layer over easyhard.report.write_report)."""

from __future__ import annotations

import json
import os

import click

from ..config import ReportConfig
from ._base import config_options, make_config, output_options


@click.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@config_options(ReportConfig)
@output_options()
def report_cmd(inputs, out_dir, force, as_json, quiet, **settings):
    """Write one page (report.html, self-contained, opens offline; and report.md) with the
    learning curves, easiness, data map, example grids, overlap, similarity, experiments and
    the provenance of every input.

    INPUTS: score runs or `easyhard score --out` folders, and analysis or experiment folders.
    Writes report.html, report.md, figures/ and report.json into --out.

    \b
    Example:
        easyhard report runs/fm analysis/overlap analysis/similarity --out report/
    """
    from ..report import write_report

    cfg = make_config(ReportConfig, settings)
    record = write_report(
        list(inputs),
        out_dir,
        title=cfg.title,
        window=cfg.window,
        force=force,
        with_examples=cfg.examples,
    )
    if as_json:
        click.echo(json.dumps(record, indent=1, default=str))
    elif not quiet:
        shown = ", ".join(k for k, v in record["sections"].items() if v)
        click.echo(
            f"report: {os.path.join(os.path.abspath(out_dir), 'report.html')} (sections: {shown})"
        )


COMMANDS = (report_cmd,)
