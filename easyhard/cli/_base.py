"""What every command of easyhard's command line shares: its group class (errors as one sentence),
options generated from the configuration dataclasses, the output options.

The command line is a thin layer over the library. Each command that has a configuration object
takes its options from it: the fields of the dataclasses in easyhard.config are the only place
where option names, defaults, choices, ranges and help are written (`config_options`). The
options that are not configuration are this explicit list (`NON_CONFIG_OPTIONS`), offered through
`output_options`:

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

import dataclasses
import json
import os
import re
import sys

import click

from ..config import (
    Config,
    ConfigError,
    DataConfig,
    check_keys,
    load_toml_file,
    typed_values,
    value_type,
)

NON_CONFIG_OPTIONS = {
    "--config": "A TOML file supplying any setting by its field name, as the job's own "
    "*-config.toml records them (e.g. archs for --arch); flags override it",
    "--out": "Where the command writes",
    "--force": "Replace an earlier easyhard output there (never anything else)",
    "--resume": "Continue the runs found in --out",
    "--debug": "Show the traceback of an error instead of one sentence",
    "--quiet": "No progress bars or per-epoch lines",
    "--json": "Print one JSON object",
}
_DEBUG = "easyhard.debug"


# ---------------------------------------------------------------------------- errors
def _config_classes(cls: type = Config) -> list[type]:
    """Every configuration dataclass (the subclasses of Config, recursively)."""
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_config_classes(sub)]
    return found


def _flag_of(name: str) -> str:
    """The command-line spelling of a parameter or configuration field name."""
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            if f.name == name and f.metadata.get("flag"):
                return f.metadata["flag"].split("/")[0]
    return "--" + name.replace("_", "-")


def cli_wording(message: str) -> str:
    """A library message worded for the command line, on one line: `name=True` -> --name,
    `name=False` -> --no-name, `name='x'` -> --name x, `name` -> --name (dashes for
    underscores)."""

    def word(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        flag = _flag_of(name)
        if value is None:
            return flag
        if value == "True":
            return flag
        if value == "False":
            return "--no-" + flag[2:]
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    message = re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)(?:=([^`]+))?`", word, message)
    return " ".join(message.split())


#: what continues an interrupted command's work (what it finished is kept)
_CONTINUE = {
    "score": "the same command with --resume continues from the last finished epoch",
    "study": "the same command with --resume continues it",
    "experiment": "the same command again continues from the last finished training",
}


class EasyhardGroup(click.Group):
    """Turns every error of a command into one sentence (exit status 1), unless --debug: a bad
    flag or value too (click's usage block and exit status 2 are for programs that parse it)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:  # the group's own options (`easyhard --nosuch`)
            if parent is not None or "--debug" in args or os.environ.get("EASYHARD_DEBUG") == "1":
                raise
            raise click.ClickException(f"{e.format_message()} (see `easyhard --help`)") from e

    def main(self, *args, **kwargs):
        """click's main; a process that joined a torch.distributed group (a torchrun worker)
        then ends through train.end_process, past the teardown that gloo's threads abort."""
        try:
            return super().main(*args, **kwargs)
        except SystemExit as e:
            train = sys.modules.get("easyhard.train")  # not imported: no group was joined
            if train is not None:
                train.end_process(e.code)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C: say what continues the work, exit status 130
            hint = _CONTINUE.get(ctx.invoked_subcommand or "")
            click.echo(f"interrupted{'; ' + hint if hint else ''}", err=True)
            raise click.exceptions.Exit(130) from None
        except click.UsageError as e:  # a bad flag or value: one sentence, exit status 1 too
            if ctx.meta.get(_DEBUG) or os.environ.get("EASYHARD_DEBUG") == "1":
                raise
            names, c = [], e.ctx
            while c is not None and c.parent is not None:  # the command's names below `easyhard`
                names.insert(0, c.info_name)
                c = c.parent
            hint = f" (see `{' '.join(['easyhard', *names, '--help'])}`)"
            raise click.ClickException(cli_wording(e.format_message()) + hint) from e
        except click.ClickException as e:
            e.message = cli_wording(e.message)
            raise
        except Exception as e:  # noqa: BLE001 - the one place that words every error
            if ctx.meta.get(_DEBUG) or os.environ.get("EASYHARD_DEBUG") == "1":
                raise
            raise click.ClickException(user_message(e)) from e


def user_message(e: BaseException) -> str:
    """One sentence for an exception: its message for user errors; for anything else (a bug),
    its type, and how to see the traceback."""
    from ..datasets import DatasetError

    text = cli_wording(str(e)) or type(e).__name__
    if isinstance(
        e, (ValueError, OSError, RuntimeError, DatasetError, ImportError)
    ) and not isinstance(e, (UnicodeError, KeyError)):
        return text
    return (
        f"internal error ({type(e).__name__}: {text}); rerun with --debug for the traceback "
        "and report it"
    )


def _set_debug(ctx: click.Context, param, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG] = True


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help=NON_CONFIG_OPTIONS["--debug"] + ".",
)


# ---------------------------------------------------------------------------- options
_CONFIG_FILE = "easyhard.config_file"


class ConfigOption(click.Option):
    """An option whose value may come from the --config file: a bad value read from the file is
    reported as the file's key (`'epochs' in run.toml`), not as a flag the user never typed."""

    def consume_value(self, ctx: click.Context, opts):
        value, source = super().consume_value(ctx, opts)
        ctx.meta[f"easyhard.source.{self.name}"] = source
        return value, source

    def process_value(self, ctx: click.Context, value):
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as e:
            source = ctx.meta.get(f"easyhard.source.{self.name}")
            config_file = ctx.meta.get(_CONFIG_FILE)
            if config_file and source == click.core.ParameterSource.DEFAULT_MAP:
                e.param_hint = f"'{self.name}' in {config_file}"
            raise


def _option(f: dataclasses.Field):
    meta = f.metadata
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    kind = value_type(f)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    common = dict(help=meta["help"], show_default=default is not None and kind is not bool)
    if kind is bool:
        if "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        return click.option(
            flag, f.name, cls=ConfigOption, default=default, show_default=True, help=meta["help"]
        )
    lo, hi = meta.get("min"), meta.get("max")
    if meta.get("choices"):
        ctype = click.Choice(meta["choices"])
    elif kind in (int, float) and (lo is not None or hi is not None):
        ranged = click.IntRange if kind is int else click.FloatRange
        ctype = ranged(
            lo, hi, min_open=meta.get("min_open", False), max_open=meta.get("max_open", False)
        )
    elif kind in (int, float):
        ctype = click.INT if kind is int else click.FLOAT
    else:
        ctype = click.STRING
    return click.option(
        flag,
        f.name,
        cls=ConfigOption,
        type=ctype,
        default=default,
        multiple=meta.get("multiple"),
        required=meta.get("required", False),
        **common,
    )


def config_options(cls: type, *, skip: tuple[str, ...] = ()):
    """Click options for every field of configuration class `cls` (one option per field, named,
    typed and documented by the field's metadata), plus --config FILE for a TOML file of them."""

    def load_config(ctx: click.Context, param, value: str | None) -> None:
        if value is None:
            return
        data = check_keys(cls, load_toml_file(value), value)
        data = typed_values(cls, data, value)
        ctx.default_map = {**(ctx.default_map or {}), **data}
        ctx.meta[_CONFIG_FILE] = value

    def decorate(fn):
        for f in reversed([f for f in dataclasses.fields(cls) if f.name not in skip]):
            fn = _option(f)(fn)
        fn = click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False),
            is_eager=True,
            expose_value=False,
            callback=load_config,
            help=NON_CONFIG_OPTIONS["--config"] + ".",
        )(fn)
        return debug_option(fn)

    return decorate


def make_config(cls: type, kwargs: dict) -> Config:
    """Pop the fields of `cls` from a command's keyword arguments into a validated `cls`."""
    values = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs}
    cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    cfg.validate()
    if isinstance(cfg, DataConfig):  # an option the dataset ignores is a mistake, not a no-op
        ctx = click.get_current_context()
        source = click.core.ParameterSource
        for name in cfg.inapplicable():
            given = ctx.get_parameter_source(name)
            if given == source.COMMANDLINE:
                raise ConfigError(cfg.inapplicable_message(name))
            # from the --config file: older job records list every option at its default
            default = cls.__dataclass_fields__[name].default
            if given == source.DEFAULT_MAP and getattr(cfg, name) != default:
                subject = f"{ctx.meta[_CONFIG_FILE]}: {name} = {getattr(cfg, name)!r}"
                raise ConfigError(cfg.inapplicable_message(name, subject))
    return cfg


# ---------------------------------------------------------------------------- shared by commands
def output_options(
    out: str | None = "Output folder.",
    *,
    force: str | None = NON_CONFIG_OPTIONS["--force"] + ".",
    resume: bool = False,
    as_json: str | None = NON_CONFIG_OPTIONS["--json"] + ".",
    quiet: str = "Print nothing but errors.",
):
    """The output options of a command, defined once for every command: --out (a folder, with
    the command's own help), --resume, --force, --quiet and --json (None or False: not offered).
    The command receives them as out_dir, force, resume, as_json and quiet."""
    options = []
    if out:
        options.append(
            click.option(
                "--out", "out_dir", type=click.Path(file_okay=False), required=True, help=out
            )
        )
    if resume:
        help_ = NON_CONFIG_OPTIONS["--resume"] + "."
        options.append(click.option("--resume", is_flag=True, help=help_))
    if force:
        options.append(click.option("--force", is_flag=True, help=force))
    options.append(click.option("--quiet", is_flag=True, help=quiet))
    if as_json:
        options.append(click.option("--json", "as_json", is_flag=True, help=as_json))

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def echo_outputs(
    record: dict, table: str, out_dir: str, written: list[str], as_json: bool, quiet: bool
) -> None:
    """How an analysis command ends: its JSON record (--json), or its table and what it wrote."""
    if as_json:
        click.echo(json.dumps(record, indent=1, default=str))
    elif not quiet:
        click.echo(table)
        click.echo(f"written: {os.path.abspath(out_dir)} ({', '.join(written)})")
