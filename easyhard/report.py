"""One page that tells a run's whole story: `easyhard report INPUT... --out DIR`.

INPUTs, in any mix: runs (a run folder, a statistics file, or an `easyhard score --out` folder,
expanded to its runs), and the folders written by `easyhard analyze overlap`, `easyhard analyze
similarity` and `easyhard experiment removal|compression` (recognised by their manifests). The
report holds whatever the inputs hold:

- learning curves per run (loss, train and test accuracy per epoch);
- the easiness histogram, overall and per class;
- a data map per architecture: mean confidence against variability, coloured by the fraction of
  correct presentations (dataset cartography's one-glance picture);
- image grids of the easiest and hardest examples per class, with labels and predictions;
- overlap between runs (pair matrix, overlap against p with chance, the groups);
- similarity ratios with their intervals; removal and compression curves with the full-data line;
- provenance of every input: files, dataset fingerprints, configurations, versions, machine.

Outputs: ``report.html`` (self-contained: figures embedded as data URIs, no external resource, so
it opens offline), ``report.md`` with ``figures/*.png`` beside it, and ``report.json`` (the
manifest: which inputs, which sections). The figures are matplotlib (Agg), titled, with labelled
axes.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import platform
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from . import __version__
from .runfolder import CHECKPOINT, read_metrics, run_cost

FORMAT, MANIFEST = "easyhard.report", "report.json"
HTML, MARKDOWN = "report.html", "report.md"  # the page, and the same in Markdown
SECTIONS = (
    "summary",
    "learning-curves",
    "easiness",
    "data-map",
    "examples",
    "overlap",
    "similarity",
    "experiments",
    "provenance",
)
TITLES = {
    "summary": "Summary",
    "learning-curves": "Learning curves",
    "easiness": "Easiness",
    "data-map": "Data map",
    "examples": "Easiest and hardest examples",
    "overlap": "Are easy and hard examples shared?",
    "similarity": "Do easy examples look alike?",
    "experiments": "Removal and compression",
    "provenance": "Provenance",
}


# ---------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """What the report was given, sorted by kind."""

    runs: list[str] = field(default_factory=list)  # the runs' statistics files
    analyses: dict[str, list[str]] = field(
        default_factory=lambda: {"overlap": [], "similarity": [], "experiment": []}
    )
    records: dict[str, dict] = field(default_factory=dict)  # folder -> its record, read once


def analysis_modules() -> dict[str, Any]:
    """The analyses and experiments a report shows, by kind: each module reads its own record
    (read_record), says what data it was made on (record_fingerprint), states its findings
    (findings, where it has some) and renders its section (report_blocks)."""
    from . import overlap, similarity
    from .experiments import folder as experiments

    return {"overlap": overlap, "similarity": similarity, "experiment": experiments}


def collect(inputs: Sequence[str], window: Any = None) -> Inputs:
    """Sort INPUTs into score runs and analysis folders; refuses what it cannot recognise, and
    a merged file merged over another window than `window`."""
    from .runfolder import run_files

    found = Inputs()
    modules = analysis_modules()
    run_items = []
    for item in inputs:
        kind = record = None
        if os.path.isdir(item):
            for k, m in modules.items():
                record = m.read_record(item)
                if record is not None:
                    kind = k
                    break
        if kind:
            found.analyses[kind].append(os.path.abspath(item))
            found.records[os.path.abspath(item)] = record
        else:
            run_items.append(item)
    names = ", ".join(m.MANIFEST for m in modules.values())
    also = f"; nor is it an easyhard analysis or experiment ({names})"
    found.runs = [os.path.abspath(f) for f in run_files(run_items, also=also, window=window)]
    if not found.runs and not any(found.analyses.values()):
        raise ValueError("nothing to report: give score runs or analysis folders")
    return found


def analysis_fingerprint(kind: str, record: dict) -> str | None:
    """The dataset fingerprint an analysis or experiment record holds (None if it holds none)."""
    return analysis_modules()[kind].record_fingerprint(record)


def check_one_dataset(inputs: list[tuple[str, str | None]]) -> None:
    """Refuse inputs (what, dataset fingerprint) of more than one dataset, naming two of them:
    one report covers one dataset (an overlap of other data was quoted in the summary)."""
    known = [(what, fp) for what, fp in inputs if fp is not None]
    for what, fp in known[1:]:
        if fp != known[0][1]:
            raise ValueError(
                f"{what} was computed on dataset fingerprint {fp!r}, {known[0][0]} on "
                f"{known[0][1]!r}: one report covers one dataset; make one report per dataset"
            )


@dataclass
class RunInfo:
    """One score run as the report shows it."""

    folder: str
    path: str  # its statistics file
    name: str
    metadata: dict
    metrics: list[dict]
    scores: dict[str, np.ndarray]
    labels: np.ndarray
    num_classes: int
    fingerprint: str | None


def load_run(path: str, window: int | None = None) -> RunInfo:
    """A run from its statistics file (its metrics.jsonl beside it)."""
    from .scores import compute_scores
    from .statsfile import read_stats_file

    folder = os.path.dirname(path)
    f = read_stats_file(path)
    if window is not None and window > f.epochs:
        raise ValueError(
            f"window must be between 1 and the {f.epochs} epochs recorded by {path}, got {window}"
        )
    metrics = read_metrics(folder, missing_ok=True)
    meta = f.metadata
    name = f"{meta.get('arch', os.path.basename(folder))} seed {meta.get('seed', '?')}"
    if meta.get("init_seed", meta.get("seed")) != meta.get("seed") or meta.get(
        "data_seed", meta.get("seed")
    ) != meta.get("seed"):
        name += f" (init {meta.get('init_seed')}, data {meta.get('data_seed')})"
    return RunInfo(
        folder,
        path,
        name,
        meta,
        metrics,
        compute_scores(f, window),
        f.labels,
        f.num_classes,
        f.fingerprint,
    )


# ---------------------------------------------------------------------------- figures
def _plt():
    from .figures import pyplot

    return pyplot()


def _png(fig) -> bytes:
    from .figures import png

    return png(fig, dpi=100)


def fig_learning_curves(runs: list[RunInfo]) -> bytes | None:
    runs = [r for r in runs if r.metrics]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for r in runs:
        ep = [m["epoch"] for m in r.metrics]
        axes[0].plot(ep, [m["loss"] for m in r.metrics], marker="o", label=r.name)
        axes[1].plot(ep, [100 * m["train_acc"] for m in r.metrics], marker="o", label=r.name)
        test = [m.get("test_acc") for m in r.metrics]
        if any(t is not None for t in test):
            axes[2].plot(
                ep, [np.nan if t is None else 100 * t for t in test], marker="o", label=r.name
            )
    for ax, title, unit in zip(
        axes,
        ("training loss", "train accuracy (training view)", "test accuracy"),
        ("cross-entropy", "accuracy (%)", "accuracy (%)"),
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if axes[2].lines:
        axes[2].legend(fontsize=8)
    else:  # no run measured a test split (an image folder without val/)
        axes[2].text(0.5, 0.5, "not measured (no test split)", ha="center", va="center",
                     transform=axes[2].transAxes, color="tab:gray")  # fmt: skip
        axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves per run")
    fig.tight_layout()
    return _png(fig)


def mean_easiness(runs: list[RunInfo]) -> np.ndarray:
    """Each example's easiness averaged over the runs that presented it (NaN, silently, for one
    no run presented: an unreadable file skipped with --skip-corrupt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "Mean of empty slice"
        return np.nanmean(np.stack([r.scores["easiness"] for r in runs]), 0)


def fig_easiness(runs: list[RunInfo], class_names: list[str] | None) -> bytes:
    plt = _plt()
    ease = mean_easiness(runs)
    labels = runs[0].labels
    C = runs[0].num_classes
    shown = list(range(min(C, 10)))
    fig = plt.figure(figsize=(13, 4.2))
    grid = fig.add_gridspec(
        2, 1 + (len(shown) + 1) // 2, width_ratios=[2.2] + [1] * ((len(shown) + 1) // 2)
    )
    ax = fig.add_subplot(grid[:, 0])
    bins = np.linspace(0, 1, 41)
    ax.hist(ease[np.isfinite(ease)], bins=bins, color="C0")
    ax.set_title(f"all classes ({np.isfinite(ease).sum()} examples)")
    ax.set_xlabel("easiness (mean over runs; 1 = always right, confident)")
    ax.set_ylabel("examples")
    for i, c in enumerate(shown):
        a = fig.add_subplot(grid[i % 2, 1 + i // 2])
        v = ease[(labels == c) & np.isfinite(ease)]
        a.hist(v, bins=bins[::2], color="C1")
        a.set_title(
            class_names[c] if class_names and c < len(class_names) else f"class {c}", fontsize=9
        )
        a.tick_params(labelsize=7)
        if i % 2:
            a.set_xlabel("easiness", fontsize=8)
    fig.suptitle(
        f"Easiness over {len(runs)} run(s): overall and per class"
        f"{'' if C <= 10 else f' (first 10 of {C} classes)'}"
    )
    fig.tight_layout()
    return _png(fig)


def fig_data_map(runs: list[RunInfo]) -> bytes:
    """Confidence against variability per architecture (its first run), coloured by the
    fraction of correct presentations."""
    plt = _plt()
    firsts: dict[str, RunInfo] = {}
    for r in runs:
        firsts.setdefault(str(r.metadata.get("arch", r.name)), r)
    shown = list(firsts.items())[:4]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.6), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (arch, r) in zip(axes[0], shown):
        conf, var = r.scores["confidence"], r.scores["variability"]
        corr = r.scores["easiness_plain"]
        ok = np.flatnonzero(np.isfinite(conf) & np.isfinite(var))
        pick = ok if len(ok) <= 20000 else rng.choice(ok, 20000, replace=False)
        sc = ax.scatter(
            var[pick],
            conf[pick],
            c=corr[pick],
            s=3,
            cmap="coolwarm_r",
            vmin=0,
            vmax=1,
            alpha=0.6,
            rasterized=True,
        )
        ax.set_xlabel("variability (std over epochs of p_true)")
        ax.set_ylabel("confidence (mean over epochs of p_true)")
        ax.set_title(f"{r.name}: {len(pick)} examples")
        ax.set_xlim(0, max(0.5, float(np.nanmax(var[pick])) if len(pick) else 0.5))
        ax.set_ylim(0, 1)
    fig.colorbar(sc, ax=axes[0].tolist(), label="fraction of presentations correct")
    fig.suptitle(
        "Data map (dataset cartography): easy-to-learn top left, ambiguous right, "
        "hard-to-learn bottom left"
    )
    return _png(fig)


def _predictions(run: RunInfo, dataset, indices: np.ndarray) -> np.ndarray | None:
    """The run's final model's predictions for `indices` (in-memory datasets; None otherwise)."""
    import torch

    from .loaders import TensorLoader
    from .models import build_model

    ckpt = os.path.join(run.folder, CHECKPOINT)
    if not dataset.in_memory or not os.path.isfile(ckpt):
        return None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model = build_model(
            run.metadata["arch"],
            dataset.num_classes,
            dataset.images.shape[-1],
            dataset.images.shape[1],
        )
        model.load_state_dict(state["model"])
    except Exception:  # noqa: BLE001 - a report shows what it can; the grid says so
        return None
    model.eval()
    loader = TensorLoader(dataset, 256, "cpu", train=False, subset=np.sort(indices))
    out = {}
    with torch.no_grad():
        for x, _, idx in loader:
            out.update(
                zip(
                    idx.tolist(),
                    model(x.contiguous(memory_format=torch.channels_last)).argmax(1).tolist(),
                )
            )
    return np.array([out[int(i)] for i in indices])


def _load_images(dataset, indices: np.ndarray, size: int = 48) -> list[np.ndarray]:

    if dataset.in_memory:
        imgs = dataset.images[indices]
        return [im[..., 0] if im.shape[-1] == 1 else im for im in imgs]
    from PIL import Image

    out = []
    for i in indices:
        with Image.open(os.path.join(dataset.root, dataset.paths[i])) as im:
            im = im.convert("RGB")
            im.thumbnail((size * 2, size * 2))
            out.append(np.asarray(im))
    return out


def fig_examples(runs: list[RunInfo], dataset, per_class: int = 6) -> bytes:
    """Rows: classes; left the easiest, right the hardest `per_class` examples (easiness mean over
    runs), titled with the label's prediction by the first run's final model."""
    plt = _plt()
    ease = mean_easiness(runs)
    labels = runs[0].labels
    C = min(runs[0].num_classes, 10)
    names = list(dataset.classes)
    picks = []
    for c in range(C):
        idx = np.flatnonzero((labels == c) & np.isfinite(ease))
        order = idx[np.argsort(-ease[idx], kind="stable")]
        picks.append((order[:per_class], order[::-1][:per_class]))
    flat = np.concatenate([np.concatenate(p) for p in picks]) if picks else np.zeros(0, int)
    preds = _predictions(runs[0], dataset, flat)
    pred_of = dict(zip(flat.tolist(), preds.tolist())) if preds is not None else {}
    fig, axes = plt.subplots(
        C, 2 * per_class, figsize=(1.25 * 2 * per_class, 1.45 * C + 0.8), squeeze=False
    )
    for c, (easy, hard) in enumerate(picks):
        cells = (
            list(easy)
            + [None] * (per_class - len(easy))
            + list(hard)
            + [None] * (per_class - len(hard))
        )
        images = _load_images(
            dataset, np.array([i for i in cells if i is not None], dtype=np.int64)
        )
        it = iter(images)
        for j, i in enumerate(cells):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i is None:
                ax.axis("off")
                continue
            im = next(it)
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None)
            p = pred_of.get(int(i))
            wrong = p is not None and p != c
            ax.set_title(
                f"#{i} {ease[i]:.2f}" + (f"\n→{names[p][:10]}" if wrong else ""),
                fontsize=6.5,
                color="red" if wrong else "black",
            )
            if j == 0:
                ax.set_ylabel(names[c][:14], fontsize=8)
    fig.suptitle(
        "Easiest (left) and hardest (right) examples per class: dataset index, easiness"
        + (
            "; red: the first run's final model predicts another class (→)"
            if pred_of
            else "; predictions not available (in-memory datasets only)"
        ),
        fontsize=10,
    )
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------- the page
@dataclass
class Section:
    key: str
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)

    def text(self, paragraph: str) -> None:
        self.html.append(f"<p>{html.escape(paragraph)}</p>")
        self.md.append(md_escape(paragraph) + "\n")

    def headline(self, finding: str, target: str) -> None:
        """A finding with a link to the section `target` that holds its evidence."""
        self.html.append(
            f'<p>{html.escape(finding)} <a href="#{target}">({html.escape(TITLES[target])})</a></p>'
        )
        self.md.append(f"{md_escape(finding)} ([{TITLES[target]}](#{target}))\n")

    def figure(self, name: str, png: bytes, caption: str, figures: dict[str, bytes]) -> None:
        figures[name] = png
        data = base64.b64encode(png).decode()
        self.html.append(
            f'<figure><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>'
            f"{html.escape(caption)}</figcaption></figure>"
        )
        self.md.append(f"![{md_escape(caption)}](figures/{name.replace(')', '%29')})\n")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def cell(v: Any) -> str:
            return f"{v:.3f}" if isinstance(v, float) else str(v)

        self.html.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr>"
            + "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
                for row in rows
            )
            + "</table>"
        )
        self.md.append(
            "| "
            + " | ".join(md_escape(h) for h in header)
            + " |\n|"
            + "---|" * len(header)
            + "\n"
            + "".join("| " + " | ".join(md_escape(cell(v)) for v in row) + " |\n" for row in rows)
        )

    def blocks(self, blocks: Sequence[tuple], prefix: str, figures: dict[str, bytes]) -> None:
        """An analysis module's report blocks: ("text", paragraph), ("table", header, rows),
        ("figure", path, caption); figures are named prefix-<file name>."""
        for block in blocks:
            if block[0] == "text":
                self.text(block[1])
            elif block[0] == "table":
                self.table(block[1], block[2])
            else:
                with open(block[1], "rb") as f:
                    self.figure(
                        f"{prefix}-{os.path.basename(block[1])}", f.read(), block[2], figures
                    )

    def details(self, title: str, text: str) -> None:
        self.html.append(
            f"<details><summary>{html.escape(title)}</summary><pre>"
            f"{html.escape(text)}</pre></details>"
        )
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
        self.md.append(
            f"<details><summary>{html.escape(title)}</summary>\n\n{fence}\n{text}\n{fence}\n"
            "</details>\n"
        )


def md_escape(text: str) -> str:
    """User text (paths, names, labels) for Markdown: HTML escaped, as Markdown shows raw HTML,
    and the characters that would make it structure (table cells, links, emphasis) escaped."""
    text = html.escape(str(text), quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text).replace("\n", " ")


def _machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "easyhard": __version__,
    }


def build(
    inputs: Sequence[str], *, window: int | None = None, with_examples: bool = True
) -> tuple[dict[str, Section], dict[str, bytes], dict[str, Any], list[dict[str, str]]]:
    """The report's sections (HTML and Markdown pieces), its figures, its provenance and its
    headlines ({"section", "text"}: the analyses' findings, as the summary states them)."""
    from .scores import check_same_window

    found = collect(inputs, window)
    runs = [load_run(f, window) for f in found.runs]
    names = [r.name for r in runs]
    for r in runs:  # two runs of one name (the same arch and seed in two jobs): told apart
        if names.count(r.name) > 1:
            parent = os.path.basename(os.path.dirname(r.folder))
            r.name += f" ({os.path.join(parent, os.path.basename(r.folder))})"
    check_one_dataset(
        [(r.folder, r.fingerprint) for r in runs]
        + [
            (folder, analysis_fingerprint(kind, found.records[folder]))
            for kind, folders in found.analyses.items()
            for folder in folders
        ]
    )
    check_same_window([(r.path, int(r.metadata.get("epochs") or 0)) for r in runs], window)
    figures: dict[str, bytes] = {}
    sections = {key: Section(key) for key in SECTIONS}
    if runs:
        _run_sections(sections, runs, with_examples, figures, window)
    headlines = []
    modules = analysis_modules()
    for kind, folders in found.analyses.items():
        target = "experiments" if kind == "experiment" else kind
        for n, folder in enumerate(folders):
            texts, blocks = _analysis_view(modules[kind], kind, folder, found.records[folder])
            if kind == "overlap" and runs:
                blocks = _runs_not_shown(found.records[folder], runs) + blocks
            if kind in ("overlap", "similarity") and runs:
                blocks = _other_window(found.records[folder], runs, window) + blocks
            headlines += [{"section": target, "text": t} for t in texts]
            sections[target].blocks(blocks, f"{kind}{n}", figures)
    if headlines:
        sections["summary"].text("What the analyses found (each links to its section):")
    for h in headlines:
        sections["summary"].headline(h["text"], h["section"])
    return sections, figures, _provenance(sections["provenance"], runs, found), headlines


def _runs_not_shown(record: dict, runs: list[RunInfo]) -> list[tuple]:
    """A note when an overlap analysis compared runs that the report does not show (it was given
    the analysis and other runs): its figures and the run table would otherwise disagree."""
    shown = {os.path.realpath(r.path) for r in runs}
    theirs = [r.get("file") for r in record.get("runs") or [] if isinstance(r, dict)]
    missing = [f for f in theirs if isinstance(f, str) and os.path.realpath(f) not in shown]
    if not missing:
        return []
    return [
        (
            "text",
            f"This analysis compared {len(theirs)} runs, {len(missing)} of which the report was "
            f"not given (first: {missing[0]}); give them too to see them in the runs above.",
        )
    ]


def _other_window(record: dict, runs: list[RunInfo], window: int | None) -> list[tuple]:
    """A note when an analysis counted other epochs than the report's runs (its window against
    the report's; a window of every recorded epoch is no window)."""
    epochs = int(runs[0].metadata.get("epochs") or 0)

    def counted(w) -> int:
        return epochs if not isinstance(w, int) or isinstance(w, bool) else min(w, epochs)

    theirs = record.get("window")
    if not epochs or counted(theirs) == counted(window):
        return []
    return [
        (
            "text",
            f"This analysis counted the first {counted(theirs)} epoch(s) of its scores, the runs "
            f"above {counted(window)}: give the report the analysis's window to compare them.",
        )
    ]


def _analysis_view(module, kind: str, folder: str, record: dict) -> tuple[list[str], list[tuple]]:
    """(findings, report blocks) of one analysis folder, by its own module; a record that is
    not what its module wrote (edited, truncated, another version's) is refused naming the
    file, not met with whatever Python error reading it raised."""
    try:
        texts = module.findings(record) if hasattr(module, "findings") else []
        return texts, module.report_blocks(folder, record)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
        raise ValueError(
            f"{os.path.join(folder, module.MANIFEST)} is not "
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} record this version can read "
            f"({type(e).__name__}: {e}): run the analysis again, or leave the folder out"
        ) from e


def _runs_dataset(run: RunInfo):
    """The dataset the runs were scored on, when it can still be read here (else None)."""
    from .config import DataConfig

    cfg = run.metadata.get("config") or {}
    try:
        data = DataConfig(**{k: v for k, v in cfg.items() if k in DataConfig.__dataclass_fields__})
        dataset = data.load_dataset("train")
    except Exception:  # noqa: BLE001 - the data may have moved: the report says so
        return None
    return dataset if dataset.fingerprint == run.fingerprint else None


def _run_sections(
    sections, runs: list[RunInfo], with_examples: bool, figures, window: int | None = None
) -> None:
    """The sections of the score runs: summary table, learning curves, easiness, data map and
    the example grids."""
    dataset = _runs_dataset(runs[0])
    class_names = list(dataset.classes) if dataset is not None else None
    rows = []
    for r in runs:
        last = r.metrics[-1] if r.metrics else {}
        rows.append(
            [
                r.name,
                r.metadata.get("epochs", len(r.metrics)),
                "n/a" if last.get("train_acc") is None else f"{100 * last['train_acc']:.1f}%",
                "n/a" if last.get("test_acc") is None else f"{100 * last['test_acc']:.1f}%",
                int(r.scores["never_presented"].sum()),
                int(r.scores["never_learned"].sum()),
                f"{run_cost(r.metrics)['images']:,}",
                f"{run_cost(r.metrics)['seconds']:.1f}",
                (r.metadata.get("config") or {}).get("prune", "none"),
            ]
        )
    sections["summary"].table(
        ["run", "epochs", "train acc", "test acc", "never presented", "never learned",
         "images trained", "seconds", "pruning"],
        rows,
    )  # fmt: skip
    lc = fig_learning_curves(runs)
    if lc:
        sections["learning-curves"].figure(
            "learning-curves.png", lc, "Loss, train and test accuracy per epoch and run", figures
        )
    sections["easiness"].text(
        "Easiness: the fraction of correct observations over "
        + ("every recorded epoch" if window is None else f"the first {window} epoch(s)")
        + ", graded by the mean true-class probability; higher is easier. Mean over runs."
    )
    sections["easiness"].figure(
        "easiness.png",
        fig_easiness(runs, class_names),
        "Easiness histogram, overall and per class",
        figures,
    )
    sections["data-map"].figure(
        "data-map.png",
        fig_data_map(runs),
        "Confidence against variability, coloured by correctness",
        figures,
    )
    if with_examples and dataset is not None:
        sections["examples"].figure(
            "examples.png",
            fig_examples(runs, dataset),
            "Easiest and hardest examples per class",
            figures,
        )
    elif with_examples:
        sections["examples"].text(
            "The dataset of these runs could not be read here (moved, "
            "or different data), so no example images are shown."
        )


def _provenance(prov: Section, runs: list[RunInfo], found: Inputs) -> dict[str, Any]:
    """Where every input came from: the machine, each run's metadata, each analysis's record."""
    provenance = {
        "machine": _machine(),
        "runs": [],
        "analyses": found.analyses,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for r in runs:
        meta = {k: v for k, v in r.metadata.items() if k not in ("identity",)}
        provenance["runs"].append(
            {"folder": r.folder, "statistics_file": r.path, "fingerprint": r.fingerprint, **meta}
        )
        prov.details(
            f"{r.name}: {r.path} (fingerprint {r.fingerprint})",
            json.dumps(meta, indent=1, sort_keys=True, default=str),
        )
    for kind, folders in found.analyses.items():
        for folder in folders:
            record = found.records[folder]
            keep = {
                k: v
                for k, v in record.items()
                if not isinstance(v, (list, dict)) or k in ("config", "identity", "grid")
            }
            prov.details(
                f"{kind}: {folder}", json.dumps(keep, indent=1, sort_keys=True, default=str)
            )
    prov.details("machine", json.dumps(provenance["machine"], indent=1))
    return provenance


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}h1{margin-bottom:.2em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{
text-align:left}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;
font-size:.8em}nav a{margin-right:1em}.empty{color:#888;font-style:italic}"""


def render(sections: dict[str, Section], title: str) -> tuple[str, str]:
    """(report.html, report.md) from the sections; an empty section says what would fill it."""
    fill = {
        "learning-curves": "score runs",
        "easiness": "score runs",
        "data-map": "score runs",
        "examples": "score runs whose dataset can be read",
        "overlap": "an `easyhard analyze overlap` folder",
        "similarity": "an `easyhard analyze similarity` folder",
        "experiments": "an `easyhard experiment removal` or `compression` folder",
    }
    body, md = [], [f"# {title}\n"]
    nav = " ".join(f'<a href="#{k}">{TITLES[k]}</a>' for k in SECTIONS)
    for key in SECTIONS:
        sec = sections[key]
        body.append(f'<section id="{key}"><h2>{TITLES[key]}</h2>')
        md.append(f'\n<a id="{key}"></a>\n\n## {TITLES[key]}\n')
        if sec.html:
            body += sec.html
            md += sec.md
        else:
            note = f"Nothing here: give {fill.get(key, 'inputs')} to fill this section."
            body.append(f'<p class="empty">{html.escape(note)}</p>')
            md.append(note + "\n")
        body.append("</section>")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{_CSS}</style></head><body><h1>"
        f"{html.escape(title)}</h1><p>easyhard {__version__}, "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p><nav>{nav}</nav>"
        + "".join(body)
        + "</body></html>\n"
    )
    return page, "\n".join(md)


def write_report(
    inputs: Sequence[str],
    out: str,
    *,
    title: str = "easyhard report",
    window: int | None = None,
    force: bool = False,
    with_examples: bool = True,
) -> dict[str, Any]:
    """Build and write report.html, report.md, figures/ and report.json into `out` (built beside
    it and swapped into place: easyhard.outputs; with `force`, an earlier report holding exactly
    the files its manifest lists is replaced)."""
    from .io import atomic_write, check_disjoint
    from .outputs import Output

    out = os.path.abspath(out)
    check_disjoint(out, {f"input {i + 1}": p for i, p in enumerate(inputs)})
    with Output(out, MANIFEST, FORMAT, force=force, command="report") as output:
        sections, figures, provenance, headlines = build(
            inputs, window=window, with_examples=with_examples
        )
        page, md = render(sections, title)

        def write(work: str) -> dict[str, Any]:
            os.makedirs(os.path.join(work, "figures"))
            for name, png in figures.items():
                with atomic_write(os.path.join(work, "figures", name)) as f:
                    f.write(png)
            with atomic_write(os.path.join(work, HTML), "w") as f:
                f.write(page)
            with atomic_write(os.path.join(work, MARKDOWN), "w") as f:
                f.write(md)
            return {
                "format": FORMAT,
                "easyhard_version": __version__,
                "title": title,
                "window": window,
                "sections": {k: bool(sections[k].html) for k in SECTIONS},
                "figures": sorted(figures),
                "headlines": headlines,
                "provenance": provenance,
            }

        return output.write(write)
