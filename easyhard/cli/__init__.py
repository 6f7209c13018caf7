"""easyhard's command line: `easyhard --help`.

One module per area (score.py: score, merge, models, info; select.py: select, compress;
analyze.py, experiment.py, bench.py: those groups; report.py; study.py), each a thin layer that
parses into a library function and prints what it returns; _base.py holds what they share. This
file makes the group and registers every command on it: no command module imports it back, and
no library module imports the command line.

A thin layer over the library. Each command that has a configuration object takes its options
from it: the fields of the dataclasses in easyhard.config are the only place where option names,
defaults, choices, ranges and help are written (`config_options`). The options that are not
configuration are this explicit list (`NON_CONFIG_OPTIONS`):

    --config FILE   a TOML file supplying any setting by its field name (flags override it)
    --out           where the command writes
    --force         replace an earlier easyhard output there (never anything else)
    --resume        continue the runs found in --out
    --debug         show the traceback of an error instead of one sentence
    --quiet         no progress bars or per-epoch lines
    --json          print one JSON object

Errors: every user error exits with status 1 and one sentence that says what is wrong and what to
do (`--debug` shows the traceback instead). Library messages name parameters in backquotes
(`data_dir`, `force=True`); this layer words them as flags (--data-dir, --force).

torch is imported inside command bodies, so `easyhard --help` answers at once.
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
