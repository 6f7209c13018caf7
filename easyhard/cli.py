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
    """Load a score file and select; returns (stats, selection). Errors are ClickExceptions."""
    from .scores import compute_scores, hardness
    from .select import select
    from .stats import SampleStats

    try:
        stats = SampleStats.load(score_file)
        values = compute_scores(stats, window)[score_name]
        labels = stats.labels
        if (labels < 0).any():
            raise ValueError(f"{score_file} has examples without a label (never presented)")
        selection = select(hardness(score_name, values), labels, stats.num_classes, keep,
                           strategy=strategy, balanced=balanced, cut_hardest=cut_hardest,
                           seed=seed, bins=bins, score_name=score_name)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    selection.info["score_file"] = os.path.abspath(score_file)
    selection.info["window"] = window
    return stats, selection


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
    C = len(selection.kept_per_class)
    shown = range(C) if C <= 50 else range(20)
    click.echo("class  kept / size")
    for c in shown:
        click.echo(f"{c:>5}  {selection.kept_per_class[c]} / {selection.class_sizes[c]}")
    if C > 50:
        click.echo(f"  ... {C - 20} more classes (all in the JSON output)")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {value}")


@main.command("select")
@selection_options
def select_cmd(score_file, keep, score_name, strategy, balanced, cut_hardest, window, bins, seed,
               out_dir, force, as_json, quiet):
    """Choose a subset from a score file: writes indices.npy, indices.txt and selection.json."""
    from .compress import write_indices
    from .io import atomic_write

    _, selection = _run_selection(score_file, keep, score_name, strategy, balanced, cut_hardest,
                                  window, bins, seed)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise click.ClickException(f"{out_dir} is not empty; pass --force to overwrite its files")
    os.makedirs(out_dir, exist_ok=True)
    write_indices(out_dir, selection.indices)
    record = {"kept": int(len(selection.indices)), "of": selection.num_samples,
              "compression_ratio": selection.ratio,
              "kept_per_class": selection.kept_per_class.tolist(),
              "class_sizes": selection.class_sizes.tolist(), **selection.info}
    with atomic_write(os.path.join(out_dir, "selection.json"), "w") as f:
        json.dump(record, f, indent=1)
    _report(selection, as_json, quiet, {"written": os.path.abspath(out_dir)})


@main.command("compress")
@selection_options
@click.option("--dataset", "dataset_name", required=True,
              type=click.Choice(["fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"]),
              help="The dataset the scores were computed on.")
@click.option("--data-dir", default=None, help="Where the dataset is (default for fashion-mnist: "
              "/usr/share/datasets/fashion-mnist).")
@click.option("--file-list", default=None, help="imagefolder: a 'relative/path label' list.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--link", type=click.Choice(["hard", "symlink", "copy"]), default="hard",
              show_default=True, help="How image files enter the new tree.")
def compress_cmd(score_file, keep, score_name, strategy, balanced, cut_hardest, window, bins,
                 seed, out_dir, force, as_json, quiet, dataset_name, data_dir, file_list, split,
                 link):
    """Write the selected subset of a dataset as a smaller dataset of the same format."""
    from .compress import OutputExistsError, compress
    from .datasets import DatasetError, load_dataset

    try:
        dataset = load_dataset(dataset_name, data_dir, split, file_list=file_list)
    except (DatasetError, OSError) as e:
        raise click.ClickException(str(e))
    stats, selection = _run_selection(score_file, keep, score_name, strategy, balanced,
                                      cut_hardest, window, bins, seed)
    scored = stats.fingerprint
    if scored != dataset.fingerprint:
        raise click.ClickException(
            f"{score_file} was scored on dataset fingerprint {scored!r}, but {dataset_name} "
            f"({dataset.root}) has fingerprint {dataset.fingerprint!r}: the scores belong to "
            "other data")
    try:
        manifest = compress(dataset, selection, out_dir, link=link, force=force,
                            provenance={"score_file": os.path.abspath(score_file)})
    except (OutputExistsError, ValueError, OSError) as e:
        raise click.ClickException(str(e))
    _report(selection, as_json, quiet, {
        "written": os.path.abspath(out_dir),
        "bytes_before": manifest["bytes_before"], "bytes_after": manifest["bytes_after"]})


if __name__ == "__main__":  # pragma: no cover
    main()
