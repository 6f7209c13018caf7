"""easyhard's command line: `easyhard --help`.

A thin layer over the library. torch is imported inside command bodies, so `easyhard --help`
answers at once.
"""
from __future__ import annotations

import json
import os
import platform

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyhard")
def main() -> None:
    """Easy and hard examples in CNN training: score every training example, analyse, compress."""


def _dali_version() -> str | None:
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali.__version__


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(as_json: bool) -> None:
    """Versions (package, torch, CUDA, DALI), devices, and the compiled backends."""
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
        ("CUDA kernels", f"CUDA {ext['cuda_version']}, archs {ext['cuda_archs']}"
         if ext["cuda_version"] else "not built (CPU-only extension)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


# ---------------------------------------------------------------------------- datasets
def dataset_options(default: str | None = "fashion-mnist"):
    """The options of every command that reads a dataset, from one definition: --dataset,
    --data-dir, --file-list and the synthetic dataset's parameters. The command receives them as
    dataset, data_dir, file_list, num_samples, num_classes, image_size, synthetic_seed."""
    from .datasets import DATASETS

    options = [
        click.option("--dataset", type=click.Choice(DATASETS), default=default,
                     required=default is None, show_default=default is not None,
                     help="The dataset (its training split)."),
        click.option("--data-dir", default=None,
                     help="Dataset root (default for fashion-mnist: "
                          "/usr/share/datasets/fashion-mnist)."),
        click.option("--file-list", default=None,
                     help="imagefolder: a 'relative/path label' list, paths under --data-dir."),
        click.option("--num-samples", type=click.IntRange(1), default=2048, show_default=True,
                     help="synthetic only."),
        click.option("--num-classes", type=click.IntRange(2), default=10, show_default=True,
                     help="synthetic only."),
        click.option("--image-size", type=click.IntRange(4), default=28, show_default=True,
                     help="synthetic only."),
        click.option("--synthetic-seed", type=int, default=0, show_default=True,
                     help="synthetic only: the seed of the data."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _load_dataset(dataset, data_dir, file_list, num_samples, num_classes, image_size,
                  synthetic_seed, split="train"):
    from .datasets import DatasetError, load_dataset

    extra = {}
    if dataset == "synthetic":
        extra = dict(num_samples=num_samples, num_classes=num_classes, image_size=image_size,
                     seed=synthetic_seed)
    try:
        return load_dataset(dataset, data_dir, split, file_list=file_list, **extra)
    except (DatasetError, OSError) as e:
        raise click.ClickException(str(e))


# ---------------------------------------------------------------------------- scoring
@main.command("score")
@dataset_options()
@click.option("--arch", "archs", multiple=True, default=("convnet", "resnet20"), show_default=True,
              help="Architecture; repeat for several (see `easyhard models`).")
@click.option("--runs", type=click.IntRange(1), default=1, show_default=True,
              help="Runs per architecture (seeds seed, seed+1, ...).")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Per process.")
@click.option("--lr", type=float, default=0.2, show_default=True, help="Peak learning rate (SGD).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--nesterov/--no-nesterov", default=True, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--schedule", type=click.Choice(["onecycle", "cosine", "step"]), default="onecycle",
              show_default=True)
@click.option("--warmup-epochs", type=float, default=0.5, show_default=True,
              help="Linear warm-up of the cosine and step schedules.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
              show_default=True, help="auto: bf16 on GPU, fp32 on CPU.")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the model.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--clean-every", type=click.IntRange(0), default=0, show_default=True,
              help="Record a clean view (eval mode, no augmentation) every K epochs (0: off).")
@click.option("--clean-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Record a clean view every K steps inside the first epoch (0: off).")
@click.option("--window", type=click.IntRange(1), default=None,
              help="Epochs counted by easiness in the merged file (default: all).")
@click.option("--crop", type=click.IntRange(8), default=224, show_default=True,
              help="Image size for image-folder datasets.")
@click.option("--workers", type=click.IntRange(1), default=4, show_default=True,
              help="Decoding threads / workers for image-folder datasets.")
@click.option("--skip-corrupt", is_flag=True,
              help="Image folders: drop unreadable images (logged; recorded as never presented) "
                   "instead of stopping with an error naming the file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder (one sub-folder per run, plus merged.npz).")
@click.option("--resume", is_flag=True, help="Continue the runs found in --out.")
@click.option("--force", is_flag=True, help="Start afresh in a non-empty --out.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
def score_cmd(dataset, data_dir, file_list, num_samples, num_classes, image_size, synthetic_seed,
              archs, runs, epochs, batch_size, lr, momentum, nesterov, weight_decay,
              label_smoothing, schedule, warmup_epochs, amp, compile_, device, seed, clean_every,
              clean_steps, window, crop, workers, skip_corrupt, out_dir, resume, force, quiet,
              as_json):
    """Train CNNs and record every training example at every presentation."""
    from .datasets import DatasetError
    from .train import DivergedError, ScoreConfig, clear_previous, score

    cfg = ScoreConfig(dataset=dataset, data_dir=data_dir, archs=tuple(archs), runs=runs,
                      epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                      nesterov=nesterov, weight_decay=weight_decay,
                      label_smoothing=label_smoothing, schedule=schedule,
                      warmup_epochs=warmup_epochs, amp=amp, compile=compile_, device=device,
                      seed=seed, clean_every=clean_every, clean_steps=clean_steps, window=window,
                      crop=crop, workers=workers, skip_corrupt=skip_corrupt, file_list=file_list,
                      num_samples=num_samples, num_classes=num_classes, image_size=image_size,
                      synthetic_seed=synthetic_seed)
    try:
        cfg.validate()
    except ValueError as e:
        raise click.ClickException(str(e))
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not (resume or force):
        raise click.ClickException(f"{out_dir} is not empty: pass --resume to continue its runs "
                                   "or --force to start afresh")
    if force and not resume:
        clear_previous(out_dir)  # only what an earlier `easyhard score` wrote
    try:
        summary = score(cfg, out_dir, resume=resume, quiet=quiet)
    except (ValueError, DatasetError, OSError, DivergedError) as e:
        raise click.ClickException(str(e))
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    elif "merged" in summary:
        click.echo(f"scores: {len(summary['runs'])} run(s) in {os.path.abspath(out_dir)}; "
                   f"merged scores in {os.path.abspath(summary['merged'])}")
        if summary["never_presented"]:
            click.echo(f"{summary['never_presented']} example(s) were never presented (dropped "
                       "as unreadable): they keep their rows with NaN scores and are left out of "
                       "every ranking")


@main.command("merge")
@click.argument("score_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Merged score file.")
@click.option("--window", type=click.IntRange(1), default=None,
              help="Epochs counted by easiness (default: all).")
def merge_cmd(score_files, out, window):
    """Average the scores of several runs (and architectures) of the same dataset."""
    from .scores import merge_score_files

    try:
        table = merge_score_files(list(score_files), out, window=window)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    click.echo(f"merged {len(score_files)} runs of {len(table.labels)} examples into {out}")


@main.command("models")
def models_cmd():
    """List the registered architectures."""
    from .models import available_models

    click.echo("\n".join(available_models()))


# ---------------------------------------------------------------------------- selection
SCORE_NAMES = ("easiness", "forgetting", "first_learned", "el2n", "margin", "confidence")


def selection_options(f):
    """Options shared by `select` and `compress` (they mirror easyhard.select.select)."""
    options = [
        click.argument("score_file", type=click.Path(exists=True, dir_okay=False)),
        click.option("--keep", required=True,
                     help="How many to keep: a fraction (0.7, 70%) or a count (700)."),
        click.option("--score", "score_name", type=click.Choice(SCORE_NAMES), default="easiness",
                     show_default=True, help="The score that ranks examples."),
        click.option("--strategy", type=click.Choice(["hardest", "easiest", "random", "stratified"]),
                     default="hardest", show_default=True,
                     help="Keep the hardest (drop the easiest), the easiest, a random draw, or "
                          "stratify across score bins (coverage-centric)."),
        click.option("--balanced/--global", default=False, show_default=True,
                     help="Class-balanced budgets (proportional to class sizes) or one global ranking."),
        click.option("--cut-hardest", type=click.FloatRange(0, 1, max_open=True), default=0.0,
                     show_default=True, help="First drop this fraction of the very hardest examples."),
        click.option("--window", type=int, default=None,
                     help="Epochs counted by easiness (default: all recorded epochs)."),
        click.option("--bins", type=click.IntRange(1), default=50, show_default=True,
                     help="Score bins of the stratified strategy."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the random and stratified strategies."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
                     help="Output folder."),
        click.option("--force", is_flag=True, help="Replace a non-empty output folder."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        click.option("--quiet", is_flag=True, help="Print nothing but errors."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_selection(score_file, keep, score_name, strategy, balanced, cut_hardest, window, bins,
                   seed):
    """Load a score file (one run's or merged) and select; returns (table, selection)."""
    from .scores import excluded, hardness, load_scores
    from .select import select

    try:
        table = load_scores(score_file, window)
        if score_name not in table.scores:
            raise ValueError(f"{score_file} holds no {score_name!r} score (it has "
                             f"{', '.join(sorted(table.scores))})")
        selection = select(hardness(score_name, table.scores[score_name]), table.labels,
                           table.num_classes, keep, strategy=strategy, balanced=balanced,
                           cut_hardest=cut_hardest, seed=seed, bins=bins, score_name=score_name,
                           exclude=excluded(table))
    except (ValueError, OSError, KeyError) as e:
        raise click.ClickException(str(e))
    selection.info["score_file"] = os.path.abspath(score_file)
    selection.info["window"] = window
    return table, selection


def _report(selection, as_json: bool, quiet: bool, extra: dict | None = None) -> None:
    payload = {"kept": int(len(selection.indices)), "of": selection.num_samples,
               "compression_ratio": selection.ratio,
               "kept_per_class": selection.kept_per_class.tolist(), **selection.info,
               **(extra or {})}
    if as_json:
        click.echo(json.dumps(payload, indent=1))
        return
    if quiet:
        return
    info = selection.info
    click.echo(f"kept {payload['kept']} of {payload['of']} examples "
               f"({payload['kept'] / max(payload['of'], 1):.1%}; compression ratio "
               f"{selection.ratio:.3f}) by {info['strategy']}"
               f"{' class-balanced' if info['balanced'] else ''} on {info['score']}"
               f"{', after cutting the ' + str(info['cut']) + ' hardest' if info['cut'] else ''}")
    if info.get("excluded"):
        click.echo(f"{info['excluded']} example(s) never presented during scoring were left out "
                   "(they have no scores)")
    C = len(selection.kept_per_class)
    shown = range(C) if C <= 50 else range(20)
    click.echo("class  kept / size")
    for c in shown:
        click.echo(f"{c:>5}  {selection.kept_per_class[c]} / {selection.class_sizes[c]}")
    if C > 50:
        click.echo(f"  ... {C - 20} more classes (all in the JSON output)")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {value}")


SELECTION_FORMAT, SELECTION_MANIFEST = "easyhard.selection", "selection.json"


@main.command("select")
@selection_options
def select_cmd(score_file, keep, score_name, strategy, balanced, cut_hardest, window, bins, seed,
               out_dir, force, as_json, quiet):
    """Choose a subset from a score file: writes indices.npy, indices.txt and selection.json."""
    from .compress import write_indices
    from .io import OutputExistsError, check_disjoint, check_replaceable, seal_output

    _, selection = _run_selection(score_file, keep, score_name, strategy, balanced, cut_hardest,
                                  window, bins, seed)
    try:
        check_disjoint(out_dir, {"score file": score_file})
        check_replaceable(out_dir, SELECTION_MANIFEST, SELECTION_FORMAT, force)
    except (OutputExistsError, ValueError) as e:
        raise click.ClickException(str(e))
    os.makedirs(out_dir, exist_ok=True)
    write_indices(out_dir, selection.indices)
    record = {"format": SELECTION_FORMAT, "kept": int(len(selection.indices)),
              "of": selection.num_samples, "compression_ratio": selection.ratio,
              "kept_per_class": selection.kept_per_class.tolist(),
              "class_sizes": selection.class_sizes.tolist(), **selection.info}
    seal_output(out_dir, SELECTION_MANIFEST, record)
    _report(selection, as_json, quiet, {"written": os.path.abspath(out_dir)})


@main.command("compress")
@selection_options
@dataset_options(default=None)
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--link", type=click.Choice(["hard", "symlink", "copy"]), default="hard",
              show_default=True, help="How image files enter the new tree.")
def compress_cmd(score_file, keep, score_name, strategy, balanced, cut_hardest, window, bins,
                 seed, out_dir, force, as_json, quiet, dataset, data_dir, file_list, num_samples,
                 num_classes, image_size, synthetic_seed, split, link):
    """Write the selected subset of a dataset as a smaller dataset of the same format."""
    from .compress import compress
    from .io import OutputExistsError

    source = _load_dataset(dataset, data_dir, file_list, num_samples, num_classes, image_size,
                           synthetic_seed, split)
    table, selection = _run_selection(score_file, keep, score_name, strategy, balanced,
                                      cut_hardest, window, bins, seed)
    scored = table.fingerprint
    if scored != source.fingerprint:
        raise click.ClickException(
            f"{score_file} was scored on dataset fingerprint {scored!r}, but {dataset} "
            f"({source.root or 'generated'}) has fingerprint {source.fingerprint!r}: the scores "
            "belong to other data")
    try:
        manifest = compress(source, selection, out_dir, link=link, force=force,
                            provenance={"score_file": os.path.abspath(score_file)},
                            inputs={"score file": score_file})
    except (OutputExistsError, ValueError, OSError) as e:
        raise click.ClickException(str(e))
    _report(selection, as_json, quiet, {
        "written": os.path.abspath(out_dir),
        "bytes_before": manifest["bytes_before"], "bytes_after": manifest["bytes_after"]})


if __name__ == "__main__":  # pragma: no cover
    main()
