"""`easyhard select` (a subset by score: its indices) and `easyhard compress` (that subset written
out as a dataset of the source's format): thin layers over easyhard.compress."""

from __future__ import annotations

import json
import os

import click

from ..config import CompressConfig, SelectConfig
from ._base import config_options, make_config, output_options


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
    if selection.left_out():
        click.echo(selection.left_out())
    C = len(selection.kept_per_class)
    shown = range(C) if C <= 50 else range(20)
    click.echo("class  kept / size")
    for c in shown:
        click.echo(f"{c:>5}  {selection.kept_per_class[c]} / {selection.class_sizes[c]}")
    if C > 50:
        click.echo(f"  ... {C - 20} more classes (all in the JSON output)")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {value}")


@click.command("select")
@click.argument("score_file", type=click.Path(exists=True, dir_okay=False))
@config_options(SelectConfig)
@output_options()
def select_cmd(score_file, out_dir, force, as_json, quiet, **settings):
    """Choose a subset by the scores of a statistics or merged scores file: writes indices.npy,
    indices.txt and selection.json.

    \b
    Example:
        easyhard select runs/fm/merged.npz --keep 0.7 --balanced --out selection/
    """
    from ..compress import select_from_file, write_selection

    cfg = make_config(SelectConfig, settings)
    _, selection = select_from_file(score_file, cfg)
    write_selection(selection, out_dir, force=force, inputs={"scores input": score_file})
    _report(selection, as_json, quiet, {"written": os.path.abspath(out_dir)})


@click.command("compress")
@click.argument("score_file", type=click.Path(exists=True, dir_okay=False))
@config_options(CompressConfig)
@output_options()
def compress_cmd(score_file, out_dir, force, as_json, quiet, **settings):
    """Write the selected subset of a dataset as a smaller dataset of the same format.

    \b
    Example:
        easyhard compress runs/fm/merged.npz --dataset fashion-mnist --keep 0.7 --balanced \\
            --out fmnist-70/
    """
    from ..compress import compress, select_from_file
    from ..runfolder import check_same_data

    cfg = make_config(CompressConfig, settings)
    source = cfg.load_dataset(cfg.split)
    table, selection = select_from_file(score_file, cfg)
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


COMMANDS = (select_cmd, compress_cmd)
