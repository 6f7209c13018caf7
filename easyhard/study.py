"""The study, the main job (`easyhard study`): score, compare, measure similarity, and end on one
page.

    easyhard study --out runs/fashion-mnist          # Fashion-MNIST, resnet8 + convnet, 2 epochs

Steps, each the library function of an ordinary easyhard command, whose output lands in a
sub-folder of `out`:

1. ``runs/``: train.train_job (`easyhard score`) with the given architectures (one run each,
   same seeds), so each pair of them differs only in architecture;
2. ``seeds/``: train.train_job of the first architecture with the next seed(s), so that pair
   differs only in seed (initialisation and data order);
3. ``overlap/``: overlap.run_overlap (`easyhard analyze overlap`) of all runs (shared across
   architectures, against chance, against seeds: "how much of it is SGD?");
4. ``similarity/``: similarity.run_similarity (`easyhard analyze similarity`) of the first
   architecture's scores, with features from the second architecture when there is one (so
   "easy" is not defined by the model that measures it);
5. ``report/``: report.write_report (`easyhard report`) of all of it.

``resume`` continues a killed study (finished runs are reused, analyses are redone); analyses
and the report inside `out` are easyhard's own outputs and are replaced on every run. ``force``
starts an earlier study afresh through each step's own ``force`` (score's deletes only the runs
it writes); it refuses, before anything is deleted, a folder holding anything a study does not
write, or runs this study does not name (an earlier study's other architectures or seeds), which
its analyses would not read and which would stay behind.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from .config import DataConfig, OverlapConfig, ScoreConfig, SimilarityConfig, StudyConfig

#: The sub-folders of a study's folder, in the order they are written.
RUNS, SEEDS, OVERLAP, SIMILARITY, REPORT = "runs", "seeds", "overlap", "similarity", "report"


def study_jobs(cfg: StudyConfig) -> list[tuple[str, ScoreConfig]]:
    """The score jobs of a study, as (sub-folder, configuration): every architecture with the
    study's seed, then the first architecture with the next seed(s)."""
    score_fields = {f.name for f in dataclasses.fields(ScoreConfig)}
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k in score_fields}
    jobs = [(RUNS, ScoreConfig(**{**base, "runs": 1}))]
    if cfg.seed_runs:
        seeds = {"archs": (cfg.archs[0],), "runs": cfg.seed_runs, "seed": cfg.seed + 1}
        jobs.append((SEEDS, ScoreConfig(**{**base, **seeds})))
    return jobs


def run_study(
    cfg: StudyConfig,
    out: str,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> str:
    """The whole study into folder `out` (see the module docstring); returns the path of
    report.html. `say` hears one line per step. The study holds `out`'s lock throughout (a
    second study of the same folder is refused at once); each step locks its own folder too."""
    from .outputs import claim

    if resume and force:
        raise ValueError(
            "`resume` continues the study in the output folder and `force` starts it afresh: "
            "give one of them"
        )
    with claim(out, "easyhard study"):
        if force and os.path.isdir(out):
            check_replaceable(cfg, out)
        elif resume:  # the analyses are replaced after the scoring: refused before it
            check_analyses(out)
        return _study(cfg, out, resume, force, quiet, say)


def _analyses() -> dict:
    from . import overlap, report, similarity

    return {OVERLAP: overlap, SIMILARITY: similarity, REPORT: report}


def check_analyses(out: str) -> None:
    """Each analysis folder of the study that exists holds an earlier analysis of its kind and
    nothing else, which the study replaces (as the analyses' own `force` checks, before the
    scoring rather than after it)."""
    from .io import check_replaceable as check_output

    for name, module in _analyses().items():
        path = os.path.join(out, name)
        if os.path.lexists(path):
            check_output(path, module.MANIFEST, module.FORMAT, True)


def check_replaceable(cfg: StudyConfig, out: str) -> None:
    """May `force` start the study afresh in `out`? Every entry must be a step's folder that
    this study writes (or a step's own hidden leftover, which that step clears), and its score
    folders may hold no run this study does not name; refuses naming the first that is not."""
    from .io import OutputExistsError
    from .runfolder import check_job_output, job_runs, other_runs

    jobs = dict(study_jobs(cfg))
    check_analyses(out)  # what the steps' own `force` will check again, checked first
    steps = (RUNS, SEEDS, OVERLAP, SIMILARITY, REPORT)
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.startswith(".") and name[1:].split(".")[0] in steps:
            continue  # a step's interrupted replacement (easyhard.outputs): the step clears it
        if name not in steps or os.path.islink(path) or not os.path.isdir(path):
            raise OutputExistsError(
                f"{out} holds {name}, which a study does not write: `force` does not delete it; "
                "move it or choose another folder"
            )
        if name in (RUNS, SEEDS) and name not in jobs:
            raise OutputExistsError(
                f"{path} holds an earlier study's runs of more seeds, which this study does not "
                "train (no `seed_runs`): `force` does not delete them; move it away or choose "
                "another folder"
            )
        if name not in jobs:  # an analysis: checked above
            continue
        check_job_output(jobs[name], path)
        left = other_runs(path, job_runs(jobs[name]))
        if left:
            raise OutputExistsError(
                f"{path} holds run folder(s) this study does not name ({', '.join(left[:6])}"
                f"{' ...' if len(left) > 6 else ''}): `force` replaces only the runs it writes, "
                "and the analyses would not read these; move them away or choose another folder"
            )


def _study(cfg: StudyConfig, out: str, resume: bool, force: bool, quiet: bool, say) -> str:
    from .overlap import run_overlap
    from .report import HTML, write_report
    from .runfolder import run_folder_name
    from .similarity import run_similarity
    from .train import train_job

    if os.path.isdir(out) and os.listdir(out) and not (resume or force):
        raise ValueError(
            f"{out} is not empty: pass `resume` to continue the study there or `force` to start "
            "it afresh, or choose another folder"
        )
    jobs = study_jobs(cfg)
    folders = []  # the study's own runs: what its analyses read (not whatever else is there)
    for step, (folder, job) in enumerate(jobs, 1):
        seeds = f"{job.seed}..{job.seed + job.runs - 1}" if job.runs > 1 else str(job.seed)
        say(f"{step}/5 scoring {', '.join(job.archs)} (seed {seeds})")
        summary = train_job(job, os.path.join(out, folder), resume=resume, quiet=quiet, force=force)
        folders += summary["runs"]
    analyses = []
    if len(cfg.archs) + cfg.seed_runs >= 2:
        say("3/5 analyze overlap")
        overlap = OverlapConfig(window=cfg.window or cfg.epochs)
        overlap.validate()
        run_overlap(overlap, folders, os.path.join(out, OVERLAP), force=True)
        analyses.append(os.path.join(out, OVERLAP))
    say("4/5 analyze similarity")
    data = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DataConfig)}
    features = None
    if len(cfg.archs) > 1:  # "easy" measured by another model than the one that defines it
        features = os.path.join(out, RUNS, run_folder_name(cfg.archs[1], 0))
    # "easy" as the overlap and the merged scores count it: the study's window
    similarity = SimilarityConfig(**data, device=cfg.device, features=features, window=cfg.window)
    similarity.validate()
    first = os.path.join(out, RUNS, run_folder_name(cfg.archs[0], 0))
    run_similarity(similarity, first, os.path.join(out, SIMILARITY), force=True)
    analyses.append(os.path.join(out, SIMILARITY))
    say("5/5 report")
    report = os.path.join(out, REPORT)
    write_report(
        [*folders, *analyses],
        report,
        title=f"easyhard study: {cfg.dataset}",
        window=cfg.window,
        force=True,
    )
    return os.path.abspath(os.path.join(report, HTML))
