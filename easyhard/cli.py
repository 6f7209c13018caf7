"""easyhard's command line: `easyhard --help`.

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

import dataclasses
import json
import os
import platform
import re

import click

from . import __version__
from .config import (
    CompressConfig,
    Config,
    ConfigError,
    DataConfig,
    ScoreConfig,
    SelectConfig,
    check_keys,
    load_toml_file,
    typed_values,
    value_type,
)

NON_CONFIG_OPTIONS = {
    "--config": "A TOML file supplying any setting by its field name; flags override it",
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

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
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
    from .datasets import DatasetError

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
        data = load_toml_file(value)
        check_keys(cls, data, value)
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


# ---------------------------------------------------------------------------- commands
@click.group(cls=EasyhardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyhard")
def main() -> None:
    """Easy and hard examples in CNN training: score every training example, analyse, compress.

    \b
    Example:
        easyhard score --out runs/fm && easyhard select runs/fm/merged.npz --keep 0.7 --out sel
    """


def _dali_version() -> str | None:
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali.__version__


@main.command()
@click.option("--json", "as_json", is_flag=True, help=NON_CONFIG_OPTIONS["--json"] + ".")
@debug_option
def info(as_json: bool) -> None:
    """Versions (package, torch, CUDA, DALI), devices, and the compiled backends.

    \b
    Example:
        easyhard info --json
    """
    import torch

    from . import ops

    build = ops.build()
    report = {
        "easyhard": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "dali": _dali_version(),
        "extension": build,
    }
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    ext = build
    rows = [
        ("easyhard", report["easyhard"]),
        ("python", report["python"]),
        ("torch", f"{report['torch']} (CUDA {report['torch_cuda'] or 'none'})"),
        ("GPUs", ", ".join(report["devices"]) or "none visible"),
        ("DALI", report["dali"] or "not installed (pip install nvidia-dali-cuda130)"),
        ("extension built for", f"torch {ext['torch_version']}"),
        ("compiled backends", ", ".join(ext["backends"])),
        (
            "CPU kernels",
            f"{ext['cpu_capability']} (this CPU runs {', '.join(ext['cpu_capabilities'])}; "
            "EASYHARD_CPU_CAPABILITY picks another)",
        ),
        (
            "CUDA kernels",
            f"CUDA {ext['cuda_version']}, archs {ext['cuda_archs']}"
            if ext["cuda_version"]
            else "not built (a CPU-only build: FORCE_CUDA=1 pip install --no-build-isolation "
            "-e . builds them)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _load_dataset(cfg: DataConfig, split: str = "train"):
    from .datasets import load_dataset

    return load_dataset(cfg.dataset, cfg.data_dir, split, **cfg.dataset_kwargs())


def _run_metadata(score_file: str, meta: dict) -> dict:
    """A statistics file's metadata as is; for a merged file, that of the first run it was
    merged from (runfolder.merged_runs), when that is still there."""
    from .runfolder import merged_runs
    from .statsfile import read_metadata_block

    if "config" in meta or "runs" not in meta:
        return meta
    try:
        return read_metadata_block(merged_runs(score_file, meta)[0]) or meta
    except ValueError:  # the runs moved: say what is known
        return meta


def check_same_data(score_file: str, table, cfg: DataConfig, dataset) -> None:
    """Refuse scores of other data than `dataset`, saying what the scores were made on (from a
    statistics file's metadata) so that the user can give those dataset options."""
    if table.fingerprint == dataset.fingerprint:
        return
    meta = _run_metadata(score_file, table.metadata or {})
    run_cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    name = meta.get("dataset") or run_cfg.get("dataset")
    made_on = ""
    if name:
        keys = [k for k, kinds in DataConfig.DATASET_ONLY.items() if name in kinds]
        opts = ", ".join(f"{k}={run_cfg[k]!r}" for k in keys if run_cfg.get(k) is not None)
        made_on = f" ({name}{': ' + opts if opts else ''})"
    raise click.ClickException(
        f"{score_file} was scored on dataset fingerprint {table.fingerprint!r}{made_on}, but "
        f"{cfg.dataset} ({dataset.root or 'generated'}) has fingerprint "
        f"{dataset.fingerprint!r}: the scores belong to other data; give the dataset options "
        "the scores were made with"
    )


# ---------------------------------------------------------------------------- scoring
@main.command("score")
@config_options(ScoreConfig)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (one sub-folder per run, plus merged.npz).",
)
@click.option("--resume", is_flag=True, help=NON_CONFIG_OPTIONS["--resume"] + ".")
@click.option(
    "--force",
    is_flag=True,
    help="Start afresh in a non-empty --out: deletes only what "
    "an earlier `easyhard score` wrote there.",
)
@click.option("--quiet", is_flag=True, help=NON_CONFIG_OPTIONS["--quiet"] + ".")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
def score_cmd(out_dir, resume, force, quiet, as_json, **settings):
    """Train CNNs and record every training example at every presentation.

    \b
    Example:
        easyhard score --dataset fashion-mnist --arch resnet20 --arch convnet --runs 2 \\
            --epochs 4 --out runs/fm
    """
    from .io import same_file
    from .runfolder import JOB_CONFIG
    from .train import train_job

    cfg = make_config(ScoreConfig, settings)
    source = click.get_current_context().meta.get(_CONFIG_FILE)
    if source and same_file(source, os.path.join(out_dir, JOB_CONFIG)):
        raise click.ClickException(
            f"{source} is the job's own record in --out, which the run rewrites: pass a copy of "
            "it as --config"
        )
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not (resume or force):
        from .datasets import FASHION_MNIST_ROOT
        from .io import check_disjoint

        # the dataset itself is the likelier mistake than an earlier job: say that first
        default_root = FASHION_MNIST_ROOT if cfg.dataset == "fashion-mnist" else None
        check_disjoint(
            out_dir, {"dataset": cfg.data_dir or default_root, "file list": cfg.file_list}
        )
        raise click.ClickException(
            f"{out_dir} is not empty: pass --resume to continue its runs or --force to start afresh"
        )
    summary = train_job(cfg, out_dir, resume=resume, quiet=quiet, force=force)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    elif "merged" in summary:
        click.echo(
            f"scores: {len(summary['runs'])} run(s) in {os.path.abspath(out_dir)}; "
            f"merged scores in {os.path.abspath(summary['merged'])}"
        )
        if summary["never_presented"]:
            click.echo(
                f"{summary['never_presented']} example(s) were never presented (dropped "
                "as unreadable): they keep their rows with NaN scores and are left out of "
                "every ranking"
            )


@main.command("merge")
@click.argument(
    "score_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The merged scores file to write."
)
@click.option(
    "--window",
    type=click.IntRange(1),
    default=None,
    help="Epochs counted by easiness (default: all).",
)
@debug_option
def merge_cmd(score_files, out, window):
    """Average the scores of several runs (and architectures) of the same dataset.

    \b
    Example:
        easyhard merge runs/fm/convnet-run*/scores.npz --window 2 --out convnet.npz
    """
    from .scores import merge_stats_files

    table = merge_stats_files(list(score_files), out, window=window)
    click.echo(f"merged {len(score_files)} runs of {len(table.labels)} examples into {out}")


@main.command("models")
@debug_option
def models_cmd():
    """List the registered architectures.

    \b
    Example:
        easyhard models
    """
    from .models import available_models

    click.echo("\n".join(available_models()))


# ---------------------------------------------------------------------------- selection
def _run_selection(score_file: str, cfg: SelectConfig):
    """Load scores (a run's statistics file or a merged scores file) and select; returns
    (table, selection)."""
    from .scores import excluded, hardness, load_scores
    from .select import select

    table = load_scores(score_file, cfg.window)
    if cfg.score not in table.scores:
        raise ValueError(
            f"{score_file} holds no {cfg.score!r} score (it has {', '.join(sorted(table.scores))})"
        )
    selection = select(
        hardness(cfg.score, table.scores[cfg.score]),
        table.labels,
        table.num_classes,
        cfg.keep,
        strategy=cfg.strategy,
        balanced=cfg.balanced,
        cut_hardest=cfg.cut_hardest,
        seed=cfg.seed,
        bins=cfg.bins,
        score_name=cfg.score,
        exclude=excluded(table),
        tie_seed=cfg.tie_seed,
    )
    selection.info["score_file"] = os.path.abspath(score_file)
    selection.info["window"] = cfg.window
    return table, selection


def _report(selection, as_json: bool, quiet: bool, extra: dict | None = None) -> None:
    payload = {
        "kept": int(len(selection.indices)),
        "of": selection.num_samples,
        "compression_ratio": selection.ratio,
        "kept_per_class": selection.kept_per_class.tolist(),
        **selection.info,
        **(extra or {}),
    }
    emptied = selection.info.get("emptied_classes") or []
    if emptied and not as_json:  # said even with --quiet: the subset lacks whole classes
        by_cut = set(selection.info.get("emptied_by_cut") or [])

        def named(classes: list[int]) -> str:
            return ", ".join(map(str, classes[:10])) + (" ..." if len(classes) > 10 else "")

        why = []
        if by_cut:
            why.append(f"--cut-hardest is global and took all of {named(sorted(by_cut))}")
        rounded = [c for c in emptied if c not in by_cut]
        if rounded:
            why.append(f"the share of {named(rounded)} rounds to none at this --keep")
        click.echo(
            f"warning: {len(emptied)} class(es) keep no example ({named(emptied)}): "
            + "; ".join(why),
            err=True,
        )
    if as_json:
        click.echo(json.dumps(payload, indent=1))
        return
    if quiet:
        return
    info = selection.info
    click.echo(
        f"kept {payload['kept']} of {payload['of']} examples "
        f"({payload['kept'] / max(payload['of'], 1):.1%}; compression ratio "
        f"{selection.ratio:.3f}) by {info['strategy']}"
        f"{' class-balanced' if info['balanced'] else ''} on {info['score']}"
        f"{', after cutting the ' + str(info['cut']) + ' hardest' if info['cut'] else ''}"
    )
    if info.get("excluded"):
        click.echo(
            f"{info['excluded']} example(s) never presented during scoring were left out "
            "(they have no scores)"
        )
    C = len(selection.kept_per_class)
    shown = range(C) if C <= 50 else range(20)
    click.echo("class  kept / size")
    for c in shown:
        click.echo(f"{c:>5}  {selection.kept_per_class[c]} / {selection.class_sizes[c]}")
    if C > 50:
        click.echo(f"  ... {C - 20} more classes (all in the JSON output)")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {value}")


def _output_options(fn):
    for option in reversed(
        [
            click.option(
                "--out",
                "out_dir",
                type=click.Path(file_okay=False),
                required=True,
                help="Output folder.",
            ),
            click.option("--force", is_flag=True, help=NON_CONFIG_OPTIONS["--force"] + "."),
            click.option(
                "--json", "as_json", is_flag=True, help=NON_CONFIG_OPTIONS["--json"] + "."
            ),
            click.option("--quiet", is_flag=True, help="Print nothing but errors."),
        ]
    ):
        fn = option(fn)
    return fn


def echo_outputs(
    record: dict, table: str, out_dir: str, written: list[str], as_json: bool, quiet: bool
) -> None:
    """How an analysis command ends: its JSON record (--json), or its table and what it wrote."""
    if as_json:
        click.echo(json.dumps(record, indent=1, default=str))
    elif not quiet:
        click.echo(table)
        click.echo(f"written: {os.path.abspath(out_dir)} ({', '.join(written)})")


SELECTION_FORMAT, SELECTION_MANIFEST = "easyhard.selection", "selection.json"


@main.command("select")
@click.argument("score_file", type=click.Path(exists=True, dir_okay=False))
@config_options(SelectConfig)
@_output_options
def select_cmd(score_file, out_dir, force, as_json, quiet, **settings):
    """Choose a subset by the scores of a statistics or merged scores file: writes indices.npy,
    indices.txt and selection.json.

    \b
    Example:
        easyhard select runs/fm/merged.npz --keep 0.7 --balanced --out selection/
    """
    from .compress import write_indices
    from .io import check_disjoint
    from .outputs import Output

    cfg = make_config(SelectConfig, settings)
    _, selection = _run_selection(score_file, cfg)
    check_disjoint(out_dir, {"scores input": score_file})

    def build(work: str) -> dict:
        write_indices(work, selection.indices)
        return {
            "format": SELECTION_FORMAT,
            "kept": int(len(selection.indices)),
            "of": selection.num_samples,
            "compression_ratio": selection.ratio,
            "kept_per_class": selection.kept_per_class.tolist(),
            "class_sizes": selection.class_sizes.tolist(),
            **selection.info,
        }

    with Output(out_dir, SELECTION_MANIFEST, SELECTION_FORMAT, force=force, command="select") as o:
        o.write(build)
    _report(selection, as_json, quiet, {"written": os.path.abspath(out_dir)})


@main.command("compress")
@click.argument("score_file", type=click.Path(exists=True, dir_okay=False))
@config_options(CompressConfig)
@_output_options
def compress_cmd(score_file, out_dir, force, as_json, quiet, **settings):
    """Write the selected subset of a dataset as a smaller dataset of the same format.

    \b
    Example:
        easyhard compress runs/fm/merged.npz --dataset fashion-mnist --keep 0.7 --balanced \\
            --out fmnist-70/
    """
    from .compress import compress

    cfg = make_config(CompressConfig, settings)
    source = _load_dataset(cfg, cfg.split)
    table, selection = _run_selection(score_file, cfg)
    check_same_data(score_file, table, cfg, source)
    manifest = compress(
        source,
        selection,
        out_dir,
        link=cfg.link,
        force=force,
        provenance={"score_file": os.path.abspath(score_file)},
        inputs={"scores input": score_file},
    )
    _report(
        selection,
        as_json,
        quiet,
        {
            "written": os.path.abspath(out_dir),
            "bytes_before": manifest["bytes_before"],
            "bytes_after": manifest["bytes_after"],
        },
    )


# ---------------------------------------------------------------------------- the study
@main.group(cls=EasyhardGroup)
def analyze() -> None:
    """Analyse score runs: are easy and hard examples shared, and do they look alike?"""


@main.group(cls=EasyhardGroup)
def experiment() -> None:
    """Train on subsets chosen by difficulty: removal and compression curves."""


@main.group(cls=EasyhardGroup)
def bench() -> None:
    """Throughput here: the training step with and without recording, and the loaders."""


# Each study command lives in easyhard/cli_<name>.py, beside its library module, and attaches
# itself to the groups above when imported here (no torch at import time).
from . import (  # noqa: E402
    cli_bench,  # noqa: F401
    cli_experiment,  # noqa: F401
    cli_overlap,  # noqa: F401
    cli_report,  # noqa: F401
    cli_similarity,  # noqa: F401
    cli_study,  # noqa: F401
)

if __name__ == "__main__":  # pragma: no cover
    main()
