"""easyhard's command line: `easyhard --help`.

One module per area (score.py: score, merge, models, info; select.py: select, compress;
analyze.py, experiment.py, bench.py: those groups; report.py; study.py), each a thin layer that
parses into a library function and prints what it returns; _base.py holds what they share (the
options generated from easyhard.config, the output options, errors as one sentence with exit
status 1). This file makes the group and registers every command on it: no command module
imports it back, and no library module imports the command line. torch is imported inside
command bodies, so `easyhard --help` answers at once.
"""

from __future__ import annotations

import click

from .. import __version__
from . import analyze, bench, experiment, report, score, select, study
from ._base import EasyhardGroup


@click.group(cls=EasyhardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyhard")
def main() -> None:
    """Easy and hard examples in CNN training: score every training example, analyse, compress.

    \b
    Example:
        easyhard score --out runs/fm && easyhard select runs/fm/merged.npz --keep 0.7 --out sel
    """


for _module in (score, select, analyze, experiment, bench, report, study):
    for _command in _module.COMMANDS:
        main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
