"""Do easy examples look alike? The spread of the easiest and hardest examples against random sets.

Kishida & Nakayama (2019) report that easy examples are visually similar to each other and hard
examples visually diverse, and suggest dataset bias as a cause. This module turns both into
numbers, with the controls a reviewer asks for:

    easyhard analyze similarity runs/fm/convnet-run0 --dataset fashion-mnist --out sim/

- **Sets.** Within each class, the easiest and the hardest ``fraction`` of its examples by a score
  (ties in random order, never by dataset index); overall, the easiest and hardest ``fraction`` of
  all examples. Examples never presented during scoring (``scores.excluded``) take no part and
  are counted.
- **Random control, matched by class.** Each subsample of a set is compared with a random set of
  the same size holding the same number of examples of every class (drawn from each class's random
  pool of ``pool_size`` examples), so a difference cannot come from which classes a set holds.
- **Spread** of a set of vectors: the mean pairwise Euclidean distance (over pairs i != j: no
  example is paired with itself) and the mean distance to the set's centroid, in two spaces:
  *pixel space* — every image resized (shorter side) and centre-cropped to ``pixel_size`` (default:
  the native size of in-memory datasets, 32 px for image folders), scaled to [0, 1], each channel
  standardised by its mean and standard deviation over the examples read — and *feature space* —
  the input of the final linear layer of a trained model (eval mode, the clean view).
- **Uncertainty.** ``repeats`` subsamples of ``min(sample_size, half the set)`` examples each, drawn
  without replacement (no bootstrap with replacement: it pairs examples with themselves). Each
  gives a ratio spread(set) / spread(its class-matched random set); the result is the mean ratio
  and the 2.5th-97.5th percentile interval over the subsamples. easy/random below 1 with an
  interval excluding 1 means "easy examples look alike"; hard/random above 1, "hard ones are
  diverse".
- **Dataset bias as a number.** Each pool example's local sparsity, the mean distance to its
  ``neighbours`` nearest neighbours of the same class within the pool (higher: sparser region),
  and its Spearman rank correlation with easiness, overall (pooled) and per class. A negative
  correlation says easy examples lie where the data is dense.
- **Features.** A run folder or checkpoint (``features``); by default another run in the score
  output folder, one that did not produce the scores. When the only model is a scoring run its
  features are used and every output says so: its own confidence defined "easy", so easy examples
  sit near its class centres partly by construction.

Budget (what makes ImageNet-size inputs finish in minutes): only examples drawn into a subsample,
the per-class pools and the image grid are read and passed through the model; per-class statistics
cover at most ``max_classes`` classes. With the defaults that is at most (4 x repeats x
sample_size) examples overall plus, per analysed class, its easy and hard sets and a pool of 1,000
(Fashion-MNIST: about 30,000 of 60,000 images; about a minute on a 2-core CPU with resnet20
features). Distances are batched ``torch.cdist`` calls, the k-nearest-neighbour search in row
chunks.

Outputs (``write_outputs``): ``similarity.json`` (the manifest, keys ``pixel``, ``features``,
``per_class``, ``density``, each ratio as ``{"mean", "low", "high"}``) and PNG figures: the
ratios with their intervals, an image grid of the easiest and hardest examples per class (label and
the feature model's prediction under each), per-class mean images of the easy, random and hard
sets, and local sparsity against easiness.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .ranks import spearman
from .runfolder import CHECKPOINT, MERGED_FILE, STATS_FILE, read_run_record

if TYPE_CHECKING:
    from .config import SimilarityConfig

FORMAT = "easyhard.similarity"
MANIFEST = "similarity.json"
FORMAT_VERSION = 1
SPACES = ("pixel", "features")
SPACE_NAMES = {"pixel": "pixel space", "features": "feature space"}
GRID_CLASSES = 10  # classes shown in the image grid and the mean images
MEAN_IMAGE_CAP = 256  # examples averaged per set for the mean images of image folders
SELF_SCORED_NOTE = (
    'features come from a model whose own confidence defined "easy" (easy '
    "examples sit near its class centres partly by construction)"
)
NO_FEATURES_NOTE = (
    "no feature model: pixel space only (give `features`: a run folder or a "
    "checkpoint of a model trained on this dataset)"
)
FILE_PIXEL_SIZE = 32  # default pixel-space size of image folders


# ---------------------------------------------------------------------------- metrics
def spread(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spread of sets of vectors.

    x: float [..., m, d], m >= 2 vectors per set (leading dimensions: several sets at once).
    Returns (mean pairwise Euclidean distance over the m (m - 1) ordered pairs i != j, mean
    Euclidean distance to the set's centroid), each float64 [...]. Computed in float64 on
    centred vectors, so identical vectors give zero spread."""
    if x.shape[-2] < 2:
        raise ValueError(f"a spread needs at least 2 vectors per set, got {x.shape[-2]}")
    lead, (m, d) = x.shape[:-2], x.shape[-2:]
    c = x.reshape(-1, m, d).to(torch.float64)
    c = c - c.mean(dim=1, keepdim=True)
    dist = torch.cdist(c, c)  # [B, m, m]
    dist.diagonal(dim1=1, dim2=2).zero_()  # self-distances are zero by definition
    pairwise = dist.sum((1, 2)) / (m * (m - 1))
    centroid = c.norm(dim=2).mean(1)
    return pairwise.reshape(lead), centroid.reshape(lead)


def knn_distance(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Mean Euclidean distance of each row of x (float [n, d]) to its k nearest other rows.

    Returns float64 [n] (NaN when n < 2); k is capped at n - 1. Rows are compared in chunks of
    `chunk` (memory chunk x n), each example excluded from its own neighbours by position (an
    exact duplicate elsewhere still counts, at distance 0)."""
    n = len(x)
    if n < 2:
        return torch.full((n,), math.nan, dtype=torch.float64)
    k = min(int(k), n - 1)
    c = x.to(torch.float32)
    c = c - c.mean(0, keepdim=True)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        d = torch.cdist(c[start : start + chunk], c)
        rows = torch.arange(len(d))
        d[rows, rows + start] = math.inf
        out[start : start + len(d)] = d.topk(k, dim=1, largest=False).values.double().mean(1)
    return out


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """{"mean", "low", "high", "n"}: the mean and the 2.5th-97.5th percentile interval of the
    finite values (None where there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    low, high = np.percentile(v, [2.5, 97.5])
    return {"mean": float(v.mean()), "low": float(low), "high": float(high), "n": int(len(v))}


# ---------------------------------------------------------------------------- sets and draws
def easiest_first(ease: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dataset indices `idx` ordered from the easiest (largest `ease`) to the hardest; ties in a
    random order from `rng` (never by dataset index)."""
    idx = np.asarray(idx, dtype=np.int64)[rng.permutation(len(idx))]
    return idx[np.argsort(-ease[idx], kind="stable")]


def class_matched_random(
    rng: np.random.Generator, labels_of_set: np.ndarray, pools: dict[int, np.ndarray]
) -> np.ndarray:
    """A random set matched by class to a set whose labels are `labels_of_set` [m]: position i
    holds an example of class labels_of_set[i], drawn without replacement from pools[class]."""
    labels_of_set = np.asarray(labels_of_set)
    out = np.empty(len(labels_of_set), dtype=np.int64)
    for c in np.unique(labels_of_set):
        where = labels_of_set == c
        pool = pools[int(c)]
        if where.sum() > len(pool):
            raise ValueError(
                f"class {int(c)}: {int(where.sum())} random examples asked of a pool of {len(pool)}"
            )
        out[where] = rng.choice(pool, int(where.sum()), replace=False)
    return out


@dataclass
class Comparison:
    """One set (key "all" or a class; which "easy" or "hard") and its draws: per repeat a
    subsample of the set and its class-matched random set (int64 [repeats, m] dataset indices)."""

    key: Any
    which: str
    set_size: int
    subsamples: np.ndarray
    randoms: np.ndarray


@dataclass
class Plan:
    """Every index the analysis reads: the sets, the per-class pools and the draws."""

    valid: np.ndarray  # bool [N]: examples taking part (presented, finite score)
    classes: list[int]  # classes with per-class statistics
    easy: dict[Any, np.ndarray]  # "all" / class -> dataset indices, easiest first
    hard: dict[Any, np.ndarray]  # "all" / class -> dataset indices, hardest first
    pools: dict[int, np.ndarray]  # class -> random pool (sorted dataset indices)
    comparisons: list[Comparison]
    skipped: dict[Any, str] = field(default_factory=dict)  # key -> why it has no statistics
    grid: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def needed(self) -> np.ndarray:
        """Sorted unique dataset indices whose vectors the analysis needs."""
        parts = [np.zeros(0, np.int64)]
        for comp in self.comparisons:
            parts += [comp.subsamples.ravel(), comp.randoms.ravel()]
        parts += [self.pools[c] for c in self.classes]
        for easy, hard in self.grid.values():
            parts += [easy, hard]
        return np.unique(np.concatenate(parts))


def subsample_size(set_size: int, sample_size: int) -> int:
    """Examples per subsample of a set: min(sample_size, half the set), so that subsamples of
    small sets still differ."""
    return min(int(sample_size), int(set_size) // 2)


def build_plan(
    ease: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    num_classes: int,
    *,
    fraction: float,
    sample_size: int,
    repeats: int,
    pool_size: int,
    max_classes: int,
    grid_examples: int = 6,
    seed: int = 0,
) -> Plan:
    """The sets and every random draw of the analysis, before any image is read.

    ease: float [N], higher = easier; labels: int64 [N]; valid: bool [N] (examples that take part).
    Sets: per class the easiest / hardest max(1, round(fraction x class size)) valid examples,
    overall the same of all valid examples. Pools: per class min(size, pool_size) random valid
    examples. Each comparison draws `repeats` subsamples of subsample_size(...) examples without
    replacement and, for each, a class-matched random set from the pools."""
    if pool_size < sample_size:
        raise ValueError(
            f"`pool_size` ({pool_size}) must be at least `sample_size` ({sample_size})"
        )
    rng = np.random.default_rng([seed, 12])
    labels = np.asarray(labels, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    ok = np.flatnonzero(valid)
    by_class = ok[np.argsort(labels[ok], kind="stable")]  # grouped by class, index order inside
    bounds = np.r_[0, np.cumsum(np.bincount(labels[ok], minlength=num_classes))]
    members = {c: by_class[bounds[c] : bounds[c + 1]] for c in range(num_classes)}
    present = [c for c in range(num_classes) if len(members[c])]
    classes = present
    if len(present) > max_classes:
        classes = sorted(
            np.random.default_rng([seed, 13]).choice(present, max_classes, replace=False).tolist()
        )
    pools = {
        c: np.sort(rng.choice(members[c], min(len(members[c]), pool_size), replace=False))
        for c in present
    }
    easy, hard, skipped, grid = {}, {}, {}, {}
    n_valid = int(valid.sum())
    if n_valid < 4:
        raise ValueError(f"only {n_valid} example(s) have scores: too few to compare sets")
    for key in ["all", *classes]:
        idx = np.flatnonzero(valid) if key == "all" else members[key]
        order = easiest_first(ease, idx, rng)
        k = max(1, int(round(fraction * len(order))))
        easy[key], hard[key] = order[:k], order[::-1][:k]
        if key != "all" and len(classes) and key in classes[:GRID_CLASSES]:
            g = min(grid_examples, len(order) // 2 or len(order))
            grid[key] = (order[:g], order[::-1][:g])
    comparisons = []
    for key in ["all", *classes]:
        m = subsample_size(len(easy[key]), sample_size)
        if m < 2:
            skipped[key] = (
                f"its easy and hard sets hold {len(easy[key])} example(s): too few for "
                "subsamples of 2"
            )
            continue
        for which, the_set in (("easy", easy[key]), ("hard", hard[key])):
            subs = np.stack([rng.choice(the_set, m, replace=False) for _ in range(repeats)])
            rands = np.stack([class_matched_random(rng, labels[s], pools) for s in subs])
            comparisons.append(Comparison(key, which, len(the_set), subs, rands))
    return Plan(valid, classes, easy, hard, pools, comparisons, skipped, grid)


# ---------------------------------------------------------------------------- inputs
@dataclass
class ScoreSource:
    """A scores input (statistics or merged scores file) and the runs around it."""

    file: str  # a run's statistics file (scores.npz) or a merged scores file
    folder: str | None  # the score output folder its runs live in
    runs: list[str]  # run folders whose models produced the scores


def resolve_score_path(path: str) -> str:
    """The file of a SCORES argument: a file, a run folder (its scores.npz) or a score
    output folder (its merged.npz)."""
    if not os.path.exists(path):
        raise ValueError(
            f"{path} does not exist: give a statistics file (a run's scores.npz) or a "
            "merged.npz) or a run folder or score output folder"
        )
    if os.path.isdir(path):
        for name in (STATS_FILE, MERGED_FILE):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise ValueError(
            f"{path} is a folder with neither scores.npz (a run folder) nor "
            "merged.npz (an `easyhard score` output folder): give a statistics file"
        )
    return path


def score_source(score_file: str, metadata: dict) -> ScoreSource:
    """Where the runs that produced `score_file` are (from its metadata and place)."""
    from .runfolder import is_run_folder
    from .statsfile import MERGED_FORMAT

    here = os.path.dirname(os.path.abspath(score_file))
    if metadata.get("format") == MERGED_FORMAT:
        runs = [
            os.path.dirname(r["file"])
            for r in metadata.get("runs", [])
            if isinstance(r, dict) and isinstance(r.get("file"), str)
        ]
        return ScoreSource(score_file, here, runs)
    if is_run_folder(here):
        return ScoreSource(score_file, os.path.dirname(here), [here])
    return ScoreSource(score_file, None, [])


@dataclass
class FeatureSource:
    """The model whose penultimate features define feature space."""

    checkpoint: str
    run: str | None  # its run folder, when it is in one
    arch: str | None
    self_scored: bool  # the model is one of those whose scores are analysed
    how: str  # how it was chosen, in words

    @property
    def name(self) -> str:
        return os.path.basename(self.run) if self.run else os.path.basename(self.checkpoint)

    def describe(self) -> str:
        text = f"{self.name} ({self.arch or 'unknown architecture'}), {self.how}"
        return text + (f"; {SELF_SCORED_NOTE}" if self.self_scored else "")


def find_feature_model(
    features: str | None, source: ScoreSource, fingerprint: str | None
) -> FeatureSource | None:
    """The feature model: `features` when given (a run folder or a checkpoint file); else a run
    in the score output folder that did not produce the scores (preferring another
    architecture); else a scoring run (self_scored); else None."""
    from .io import real
    from .runfolder import is_run_folder

    scoring = {real(r) for r in source.runs}
    if features is not None:
        if not os.path.exists(features):
            raise ValueError(
                f"the feature model {features} does not exist: give `features` a "
                "run folder of `easyhard score` or its checkpoint.pt"
            )
        ckpt = os.path.join(features, CHECKPOINT) if os.path.isdir(features) else features
        if not os.path.isfile(ckpt):
            raise ValueError(
                f"{features} holds no checkpoint.pt: give `features` a run folder "
                "of `easyhard score` or a checkpoint file"
            )
        folder = os.path.dirname(os.path.abspath(ckpt))
        run = folder if is_run_folder(folder) else None
        self_scored = real(folder) in scoring
        return FeatureSource(
            ckpt, run, read_run_record(folder).get("arch"), self_scored, "given as --features"
        )
    if source.folder is None or not os.path.isdir(source.folder):
        return None
    others, own = [], []
    for name in sorted(os.listdir(source.folder)):
        folder = os.path.join(source.folder, name)
        ckpt = os.path.join(folder, CHECKPOINT)
        if not (os.path.isdir(folder) and is_run_folder(folder) and os.path.isfile(ckpt)):
            continue
        record = read_run_record(folder)
        if fingerprint is not None and record.get("dataset_fingerprint") != fingerprint:
            continue
        (own if real(folder) in scoring else others).append((folder, ckpt, record.get("arch")))
    if others:
        scoring_archs = {read_run_record(r).get("arch") for r in source.runs}
        others.sort(key=lambda o: o[2] in scoring_archs)  # another architecture first (stable)
        folder, ckpt, arch = others[0]
        return FeatureSource(
            ckpt, folder, arch, False, "a run in the score folder that did not produce these scores"
        )
    if own:
        folder, ckpt, arch = own[0]
        how = (
            "one of the runs that produced these scores (every run in the score folder fed them)"
            if len(own) > 1
            else "the scoring run itself (no other run in the score folder)"
        )
        return FeatureSource(ckpt, folder, arch, True, how)
    return None


def final_linear(model: nn.Module, num_classes: int) -> nn.Linear:
    """The model's classifier: its last nn.Linear module, which must have num_classes outputs."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].out_features != num_classes:
        raise ValueError(
            f"{type(model).__name__} has no final linear layer with {num_classes} "
            "outputs to take penultimate features from"
        )
    return linears[-1]


def load_feature_model(
    checkpoint: str, dataset, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """The model of an `easyhard score` checkpoint (torch.load weights_only), in eval mode on
    `device`; refuses a model trained on other data (dataset fingerprint). Returns (model, info)
    with info {"arch", "epoch", "fingerprint"}."""
    from .models import build_model

    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{checkpoint} cannot be read as a checkpoint ({type(e).__name__}): give "
            "`features` a checkpoint.pt written by `easyhard score`"
        ) from e
    if (
        not isinstance(ck, dict)
        or not isinstance(ck.get("model"), dict)
        or not isinstance(ck.get("arch"), str)
    ):
        raise ValueError(
            f"{checkpoint} is not an easyhard checkpoint (no model state and "
            "architecture): give `features` a checkpoint.pt written by "
            "`easyhard score`"
        )
    identity = ck.get("identity") if isinstance(ck.get("identity"), dict) else {}
    fp = identity.get("dataset_fingerprint")
    if fp is None:
        raise ValueError(
            f"{checkpoint} does not record the data its model was trained on, so its "
            "features cannot be checked against this dataset: give `features` a "
            "checkpoint written by this easyhard"
        )
    if fp != dataset.fingerprint:
        raise ValueError(
            f"the feature model {checkpoint} was trained on dataset fingerprint "
            f"{fp!r}, but {dataset.name} ({dataset.root or 'generated'}) has "
            f"fingerprint {dataset.fingerprint!r}: its features describe other data; "
            "give `features` a model trained on this dataset"
        )
    config = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    in_ch, size = dataset.channels, dataset.input_size(int(config.get("crop", 224)))
    model = build_model(ck["arch"], dataset.num_classes, in_ch, size)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ValueError(
            f"the weights in {checkpoint} do not fit a {ck['arch']} for "
            f"{dataset.num_classes} classes and {in_ch} channel(s): it was trained on "
            "other data"
        ) from e
    final_linear(model, dataset.num_classes)
    model.to(device).eval()
    return model, {
        "arch": ck["arch"],
        "epoch": ck.get("epoch"),
        "fingerprint": fp,
        "crop": int(config.get("crop", 224)),
    }


@torch.no_grad()
def penultimate(
    model: nn.Module, x: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [B, D], logits [B, num_classes]) of a batch: features are the input of the final
    linear layer, taken with a forward pre-hook (the model is called once, as it is)."""
    captured: list[torch.Tensor] = []
    handle = final_linear(model, num_classes).register_forward_pre_hook(
        lambda module, inputs: captured.append(inputs[0].detach())
    )
    try:
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits


def extract_features(
    model: nn.Module,
    dataset,
    indices: np.ndarray,
    device: torch.device | str,
    *,
    batch_size: int = 512,
    crop: int = 224,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (float32 [n, D], CPU) and predictions (int64 [n]) of the examples
    `indices`, in that order: the clean view (eval mode, no augmentation) as the model was
    trained on, batched on `device`, no gradients."""
    from .datasets import FileDataset
    from .loaders import TensorLoader, make_loader

    indices = np.asarray(indices, dtype=np.int64)
    model.eval()
    if dataset.in_memory:
        loader = TensorLoader(dataset, batch_size, device, train=False, subset=indices)
        position = None
    else:
        sub = FileDataset(
            dataset.name,
            dataset.split,
            dataset.root,
            [dataset.paths[i] for i in indices],
            dataset.labels[indices],
            dataset.classes,
            fingerprint=dataset.fingerprint or "subset",
        )
        loader = make_loader(sub, batch_size, device, train=False, crop=crop, workers=workers)
        position = indices
    feats, preds, got = [], [], []
    for x, _, idx in loader:
        f, logits = penultimate(model, x, dataset.num_classes)
        feats.append(f.float().cpu())
        preds.append(logits.argmax(1).cpu())
        got.append(idx.cpu())
        if progress is not None:
            progress(len(idx))
    order = torch.cat(got).numpy()
    if position is not None:
        order = position[order]
    if len(order) != len(indices) or not np.array_equal(np.sort(order), np.sort(indices)):
        raise RuntimeError("the feature loader did not return every requested example once")
    back = np.argsort(order, kind="stable")[
        np.argsort(np.argsort(indices, kind="stable"), kind="stable")
    ]
    return torch.cat(feats)[back], torch.cat(preds)[back]


def resize_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images [n, C, H, W] resized (shorter side to `size`, antialiased bilinear) and
    centre-cropped to size x size; unchanged when already that size."""
    H, W = x.shape[-2:]
    if H == size and W == size:
        return x
    if min(H, W) != size:
        scale = size / min(H, W)
        x = nn.functional.interpolate(
            x,
            size=(max(size, round(H * scale)), max(size, round(W * scale))),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    H, W = x.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    return x[..., top : top + size, left : left + size]


def load_pixels(
    dataset, indices: np.ndarray, size: int | None = None, workers: int = 4
) -> torch.Tensor:
    """Images of `indices` as float32 [n, C, S, S] in [0, 1]: in-memory datasets at their native
    size unless `size` is given, image files resized and centre-cropped to `size` (default 32)."""

    indices = np.asarray(indices, dtype=np.int64)
    if dataset.in_memory:
        x = torch.from_numpy(dataset.images[indices]).permute(0, 3, 1, 2).float().div_(255)
        return x if size is None else resize_crop(x, size).contiguous()
    from concurrent.futures import ThreadPoolExecutor

    import torchvision.transforms.functional as TF
    from PIL import Image

    from .loaders import CorruptImageError

    size = size or FILE_PIXEL_SIZE

    def read(i: int) -> torch.Tensor:
        path = os.path.join(dataset.root, dataset.paths[i])
        try:
            with Image.open(path) as im:
                im = TF.resize(im.convert("RGB"), size, antialias=True)
                im = TF.center_crop(im, [size, size])
                return TF.pil_to_tensor(im)
        except Exception as e:
            raise CorruptImageError(f"cannot decode image {path} ({e})") from e

    if len(indices) == 0:
        return torch.zeros(0, 3, size, size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(read, indices.tolist()))
    return torch.stack(images).float().div_(255)


def pixel_vectors(images: torch.Tensor) -> torch.Tensor:
    """Pixel space: images [n, C, S, S] in [0, 1], each channel standardised by its mean and
    standard deviation over these images, flattened to float32 [n, C*S*S]."""
    mean = images.mean((0, 2, 3), keepdim=True)
    std = images.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    return ((images - mean) / std).flatten(1)


# ---------------------------------------------------------------------------- the analysis
def ratio_stats(
    vectors: torch.Tensor, rows_sub: np.ndarray, rows_rand: np.ndarray
) -> dict[str, Any]:
    """Spread ratios of one comparison in one space: vectors [n, d], row indices [R, m] of the
    subsamples and of their random sets. Returns the ratio summaries for both measures and the
    mean spreads."""
    sub_p, sub_c = spread(vectors[torch.from_numpy(rows_sub)])
    ran_p, ran_c = spread(vectors[torch.from_numpy(rows_rand)])
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = (sub_p / ran_p).numpy()
        cent = (sub_c / ran_c).numpy()
    return {
        "pairwise": summarize(pair),
        "centroid": summarize(cent),
        "spread": {
            "set": {"pairwise": float(sub_p.mean()), "centroid": float(sub_c.mean())},
            "random": {"pairwise": float(ran_p.mean()), "centroid": float(ran_c.mean())},
        },
    }


def _space_entry(easy: dict, hard: dict, m: int, repeats: int, set_size: int) -> dict[str, Any]:
    return {
        "easy_over_random": easy["pairwise"],
        "hard_over_random": hard["pairwise"],
        "measure": "mean pairwise distance",
        "centroid": {"easy_over_random": easy["centroid"], "hard_over_random": hard["centroid"]},
        "spread": {
            "easy": easy["spread"]["set"],
            "hard": hard["spread"]["set"],
            "random_for_easy": easy["spread"]["random"],
            "random_for_hard": hard["spread"]["random"],
        },
        "set_size": set_size,
        "sample_size": m,
        "repeats": repeats,
    }


@dataclass
class Result:
    """What the analysis found: the JSON record and the arrays its figures draw."""

    record: dict[str, Any]
    class_names: list[str]
    grid: dict[int, dict[str, Any]]  # class -> easy/hard images, labels, predictions
    mean_images: dict[int, dict[str, np.ndarray]]  # class -> {"easy", "random", "hard"} [C, H, W]
    density_points: dict[str, np.ndarray]  # per pool example: "ease", "labels", "pixel", ...


def analyze(
    table,
    dataset,
    *,
    fraction: float = 0.1,
    score: str = "easiness",
    sample_size: int = 100,
    repeats: int = 50,
    pool_size: int = 1000,
    neighbours: int = 10,
    max_classes: int = 50,
    pixel_size: int | None = None,
    grid_examples: int = 6,
    seed: int = 0,
    feature_model: nn.Module | None = None,
    feature_source: FeatureSource | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    crop: int = 224,
    workers: int = 4,
    log: Callable[[str], None] = lambda s: None,
) -> Result:
    """Measure whether the easy examples of `table` (a scores.ScoreTable) look alike in
    `dataset` (the data it was scored on): see the module docstring for every definition.
    Stages: the plan (sets, subsamples, pools: build_plan), the vectors of the examples it needs
    (_read_vectors), spreads against random sets (_spread_entries), local density on the pools
    (_density), the figures' data (_figure_data), the record (_record)."""
    from .scores import excluded, hardness

    table.column(score, "the scores input")  # refused by name when it holds none
    if len(table.labels) != len(dataset) or not np.array_equal(table.labels, dataset.labels):
        raise ValueError(
            "the scores input and the dataset disagree on the examples or their labels"
        )
    ease = -hardness(score, table.column(score, "the scores input"))
    valid = ~excluded(table) & ~np.isnan(ease)
    plan = build_plan(
        ease,
        table.labels,
        valid,
        dataset.num_classes,
        fraction=fraction,
        sample_size=sample_size,
        repeats=repeats,
        pool_size=pool_size,
        max_classes=max_classes,
        grid_examples=grid_examples,
        seed=seed,
    )
    if "all" in plan.skipped:  # every set is at most as large as the pooled one: none compares
        raise ValueError(
            f"the easiest and hardest {fraction:g} of the {int(valid.sum())} scored examples are "
            f"too small to compare ({plan.skipped['all']}; a subsample is at most half a set); "
            "raise `fraction` or give more data"
        )
    name = feature_source.name if feature_source else "the model"
    vectors = _read_vectors(
        plan, dataset, pixel_size, workers, feature_model, name, device, batch_size, crop, log
    )
    entry = _spread_entries(plan, vectors, repeats)
    density, points, by_class = _density(plan, vectors, ease, dataset, neighbours, pool_size)
    if score != "easiness":  # the correlation is with the ranking score, oriented to ease
        density["correlation"] = density["correlation"].replace(
            "with easiness", f"with {score} oriented so that higher is easier"
        )
    per_class = []
    for c in plan.classes:
        item = {
            "class": c,
            "name": dataset.classes[c],
            "examples": int((valid & (table.labels == c)).sum()),
            "set_size": int(len(plan.easy[c])),
            "pixel": entry(c, "pixel"),
            "features": entry(c, "features"),
            "density": {s: by_class[s].get(c) if s in by_class else None for s in SPACES},
        }
        if c in plan.skipped:
            item["skipped"] = plan.skipped[c]
        per_class.append(item)
    grid, mean_images = _figure_data(plan, vectors, table.labels, ease, dataset, pixel_size,
                                     workers, seed)  # fmt: skip
    settings = dict(score=score, fraction=fraction, sample_size=sample_size, repeats=repeats,
                    pool_size=pool_size, neighbours=neighbours, max_classes=max_classes,
                    seed=seed)  # fmt: skip
    record = _record(plan, vectors, table, dataset, valid, entry, per_class, density,
                     feature_source, feature_model is not None, settings)  # fmt: skip
    return Result(record, list(dataset.classes), grid, mean_images, points)


@dataclass
class Vectors:
    """The examples a plan needs (dataset indices, ascending), their images, their vectors in
    each space, and the feature model's predictions (None without one)."""

    needed: np.ndarray
    images: torch.Tensor
    spaces: dict[str, torch.Tensor]
    preds: torch.Tensor | None

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dataset indices -> rows of the vectors read."""
        return np.searchsorted(self.needed, idx)

    def take(self, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return x[torch.from_numpy(self.rows(idx))]


def _read_vectors(
    plan: Plan, dataset, pixel_size, workers, model, name, device, batch_size, crop, log
) -> Vectors:
    """Read the plan's examples once: pixels (and features, with a feature model)."""
    needed = plan.needed()
    log(f"reading {len(needed)} of {len(dataset)} examples")
    images = load_pixels(dataset, needed, pixel_size, workers)
    spaces, preds = {"pixel": pixel_vectors(images)}, None
    if model is not None:
        log(f"features of {len(needed)} examples from {name}")
        spaces["features"], preds = extract_features(
            model, dataset, needed, device, batch_size=batch_size, crop=crop, workers=workers
        )
    return Vectors(needed, images, spaces, preds)


def _spread_entries(plan: Plan, vectors: Vectors, repeats: int) -> Callable:
    """entry(key, space): the easy and hard sets' spread ratios against class-matched random
    sets of one comparison (a class, or "all"), or None where it was skipped."""
    found: dict[tuple, dict] = {}
    for comp in plan.comparisons:
        for space, vec in vectors.spaces.items():
            found[(comp.key, comp.which, space)] = ratio_stats(
                vec, vectors.rows(comp.subsamples), vectors.rows(comp.randoms)
            )
    sizes = {comp.key: (comp.set_size, comp.subsamples.shape[1]) for comp in plan.comparisons}

    def entry(key, space):
        if key in plan.skipped or space not in vectors.spaces:
            return None
        set_size, m = sizes[key]
        return _space_entry(
            found[(key, "easy", space)], found[(key, "hard", space)], m, repeats, set_size
        )

    return entry


def _density(plan: Plan, vectors: Vectors, ease, dataset, neighbours: int, pool_size: int):
    """Local density on each class's random pool against easiness: (the record's density
    entry, the figure's points, per space the per-class Spearman correlations by class)."""
    points = {"ease": [], "labels": [], **{s: [] for s in vectors.spaces}}
    per_class = {s: [] for s in vectors.spaces}
    for c in plan.classes:
        pool = plan.pools[c]
        points["ease"].append(ease[pool])
        points["labels"].append(np.full(len(pool), c))
        for space, vec in vectors.spaces.items():
            knn = knn_distance(vectors.take(vec, pool), neighbours).numpy()
            points[space].append(knn)
            per_class[space].append(
                {
                    "class": c,
                    "name": dataset.classes[c],
                    "spearman": _nan_none(spearman(knn, ease[pool])),
                    "n": int(len(pool)),
                }
            )
    points = {k: np.concatenate(v) if v else np.zeros(0) for k, v in points.items()}
    density = {
        "measure": f"mean distance to the {neighbours} nearest same-class neighbours within "
        "the class's random pool (higher: sparser region)",
        "correlation": "Spearman rank correlation of that distance with easiness "
        "(negative: easy examples lie in denser regions)",
        "k": neighbours,
        "pool_size": pool_size,
    }
    for space in SPACES:
        if space not in vectors.spaces:
            density[space] = None
            continue
        rhos = [d["spearman"] for d in per_class[space] if d["spearman"] is not None]
        density[space] = {
            "spearman": _nan_none(spearman(points[space], points["ease"])),
            "mean_per_class": float(np.mean(rhos)) if rhos else None,
            "per_class": per_class[space],
        }
    by_class = {s: {d["class"]: d["spearman"] for d in per_class[s]} for s in per_class}
    return density, points, by_class


def _figure_data(plan: Plan, vectors: Vectors, labels, ease, dataset, pixel_size, workers, seed):
    """The image grid (easiest and hardest examples per shown class, with label, prediction and
    easiness) and the mean images of each shown class's easy, random and hard sets."""
    grid = {}
    for c, (easy_idx, hard_idx) in plan.grid.items():
        grid[c] = {
            which: {
                "images": vectors.take(vectors.images, idx).numpy(),
                "index": idx,
                "label": labels[idx],
                "pred": None if vectors.preds is None else vectors.take(vectors.preds, idx).numpy(),
                "ease": ease[idx],
            }
            for which, idx in (("easy", easy_idx), ("hard", hard_idx))
        }
    mean_images = {}
    rng = np.random.default_rng([seed, 14])
    for c in plan.grid:
        sets = {"easy": plan.easy[c], "random": plan.pools[c], "hard": plan.hard[c]}
        means = {}
        for name, idx in sets.items():
            if not dataset.in_memory and len(idx) > MEAN_IMAGE_CAP:
                idx = rng.choice(idx, MEAN_IMAGE_CAP, replace=False)
            means[name] = load_pixels(dataset, idx, pixel_size, workers).mean(0).numpy()
        mean_images[c] = means
    return grid, mean_images


def _record(
    plan, vectors, table, dataset, valid, entry, per_class, density, fs, with_features, settings
) -> dict:
    """similarity.json's record (see the module docstring for every key)."""
    from . import __version__

    side = int(vectors.images.shape[-1])
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "score": settings["score"],
        "fraction": settings["fraction"],
        "dataset": {
            "name": dataset.name,
            "root": dataset.root,
            "fingerprint": dataset.fingerprint,
            "examples": int(len(dataset)),
            "classes": list(dataset.classes),
        },
        "examples_used": int(valid.sum()),
        "excluded": int((~valid).sum()),
        "excluded_reason": "never presented during scoring (no score)",
        "pixel": entry("all", "pixel"),
        "features": entry("all", "features"),
        "cross_class_pairs": {
            which: cross_class_pairs(table.labels[the_set["all"]])
            for which, the_set in (("easy", plan.easy), ("hard", plan.hard))
        },
        "per_class": per_class,
        "density": density,
        "feature_model": None
        if fs is None
        else {
            "checkpoint": os.path.abspath(fs.checkpoint),
            "run": fs.run and os.path.abspath(fs.run),
            "arch": fs.arch,
            "how": fs.how,
            "self_scored": fs.self_scored,
            "note": SELF_SCORED_NOTE if fs.self_scored else None,
        },
        "note": (
            SELF_SCORED_NOTE
            if fs is not None and fs.self_scored
            else NO_FEATURES_NOTE
            if not with_features
            else None
        ),
        "pixel_space": (
            f"images resized (shorter side) and centre-cropped to {side} px, scaled to [0, 1], "
            "each channel standardised over the examples read"
        ),
        "random_control": "per subsample, a random set with the same number of examples of each "
        "class, drawn without replacement from the class's random pool",
        "interval": "2.5th-97.5th percentile of the ratio over the subsamples (drawn without "
        "replacement)",
        "settings": {
            **{k: settings[k] for k in ("sample_size", "repeats", "pool_size", "neighbours")},
            "max_classes": settings["max_classes"],
            "pixel_size": side,
            "seed": settings["seed"],
        },
        "examples_read": int(len(vectors.needed)),
        "skipped": {str(k): v for k, v in plan.skipped.items()},
        "versions": {"easyhard": __version__, "torch": torch.__version__, "numpy": np.__version__},
    }


def cross_class_pairs(labels: np.ndarray) -> float:
    """The share of a set's pairs (i != j) whose two examples belong to different classes."""
    n = len(labels)
    if n < 2:
        return 0.0
    counts = np.bincount(np.asarray(labels, dtype=np.int64)).astype(np.float64)
    return float(1.0 - (counts * (counts - 1)).sum() / (n * (n - 1)))


def _verdict(stat: Any) -> str | None:
    """'below' / 'above' when a ratio's 95% interval excludes 1, 'unresolved' when it holds 1,
    None without an interval."""
    if not isinstance(stat, dict) or not all(
        isinstance(stat.get(k), (int, float)) for k in ("low", "high")
    ):
        return None
    return "below" if stat["high"] < 1 else "above" if stat["low"] > 1 else "unresolved"


def _interval_text(stat: dict) -> str:
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def findings(record: dict[str, Any]) -> list[str]:
    """The similarity analysis in sentences, as the report's summary states it, judged by the
    95% intervals: per space, in how many classes the easiest set is tighter than class-matched
    random sets (interval below 1) and the hardest more diverse (interval above 1), beside the
    pooled ratios, and, when the two disagree, why: the pooled sets' pairs are mostly pairs of
    examples of different classes (the share is computed from the sets)."""
    frac = record.get("fraction", 0.1)
    out = []
    for space in SPACES:
        classes = [pc for pc in record.get("per_class") or [] if isinstance(pc.get(space), dict)]
        pooled = record.get(space)
        if not classes and not isinstance(pooled, dict):
            continue
        n = len(classes)
        skipped = sum(1 for pc in record.get("per_class") or [] if pc.get("skipped"))
        measured = f"{n} classes" + (f" (and {skipped} too small to measure)" if skipped else "")
        v = {
            w: [_verdict(pc[space].get(f"{w}_over_random")) for pc in classes]
            for w in ("easy", "hard")
        }
        parts = []
        if n:
            parts.append(
                f"Within classes ({SPACE_NAMES[space]}), the easiest {frac:.0%} is tighter than "
                f"class-matched random sets (95% interval below 1) in {v['easy'].count('below')} "
                f"of {measured} and more diverse (above 1) in {v['easy'].count('above')}; the "
                f"hardest {frac:.0%} is more diverse (interval above 1) in "
                f"{v['hard'].count('above')} of {n} and tighter in {v['hard'].count('below')}."
            )
        pooled_v = {}
        if isinstance(pooled, dict):
            words = {"below": "tighter", "above": "more diverse", "unresolved": "not resolved"}
            shown = []
            for w, name in (("easy", "easiest"), ("hard", "hardest")):
                stat = pooled.get(f"{w}_over_random")
                pooled_v[w] = _verdict(stat)
                if pooled_v[w] is not None:
                    shown.append(f"{name} {_interval_text(stat)} ({words[pooled_v[w]]})")
            if shown:
                parts.append(
                    f"Pooled over all classes ({SPACE_NAMES[space]}): " + ", ".join(shown) + "."
                )
        majority = {  # the verdict more than half of the classes share, if one does
            w: next((x for x in set(v[w]) if x and 2 * v[w].count(x) > n), None)
            for w in ("easy", "hard")
        }
        disagree = any(
            majority[w] and pooled_v.get(w) and pooled_v[w] != majority[w] for w in ("easy", "hard")
        )
        if disagree:
            shares = record.get("cross_class_pairs") or {}
            of = ""
            if all(isinstance(shares.get(w), float) for w in ("easy", "hard")):
                of = (
                    f" ({shares['easy']:.0%} of the easiest set's pairs, "
                    f"{shares['hard']:.0%} of the hardest's)"
                )
            parts.append(
                "The two differ because most pairs in a pooled set join examples of different "
                f"classes{of}: their distances measure how far apart classes lie, not how alike "
                "a class's examples are, so the per-class counts answer whether easy examples "
                "look alike."
            )
        if parts:
            out.append(" ".join(parts))
    return out


def _nan_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---------------------------------------------------------------------------- figures
def _feature_caption(record: dict) -> str:
    fm = record.get("feature_model")
    if fm is None:
        return "no feature model"
    name = os.path.basename(fm["run"]) if fm.get("run") else os.path.basename(fm["checkpoint"])
    text = f"features: {name} ({fm.get('arch')})"
    if fm.get("self_scored"):
        text += ' — a model whose own confidence defined "easy"'
    return text


def plot_ratios(result: Result, path: str) -> None:
    """Easy/random and hard/random spread ratios with their intervals, overall and per class, one
    panel per space."""
    from .figures import pyplot, save

    plt = pyplot()

    rec = result.record
    spaces = [s for s in SPACES if rec.get(s) is not None]
    rows = [("all classes", rec)] + [
        (pc["name"], pc) for pc in rec["per_class"] if pc.get("pixel") is not None
    ]
    fig, axes = plt.subplots(
        1,
        len(spaces),
        figsize=(5.2 * len(spaces), 1.2 + 0.38 * len(rows)),
        squeeze=False,
        sharey=True,
    )
    y = np.arange(len(rows))[::-1]
    for ax, space in zip(axes[0], spaces):
        for offset, key, colour, label in (
            (0.15, "easy_over_random", "tab:blue", "easy / random"),
            (-0.15, "hard_over_random", "tab:red", "hard / random"),
        ):
            mean, lo, hi = [], [], []
            for _, item in rows:
                s = (item.get(space) or {}).get(key) or {}
                mean.append(s.get("mean", np.nan) if s.get("mean") is not None else np.nan)
                lo.append(s.get("low") if s.get("low") is not None else np.nan)
                hi.append(s.get("high") if s.get("high") is not None else np.nan)
            mean, lo, hi = map(np.array, (mean, lo, hi))
            ax.errorbar(
                mean,
                y + offset,
                xerr=[mean - lo, hi - mean],
                fmt="o",
                color=colour,
                capsize=3,
                markersize=4,
                label=label,
            )
        ax.axvline(1.0, color="0.3", lw=1, ls="--")
        ax.set_yticks(y)
        ax.set_yticklabels([name for name, _ in rows])
        ax.set_xlabel("spread ratio: set / class-matched random set")
        ax.set_title(
            {"pixel": "pixel space", "features": _feature_caption(rec)}[space],
            fontsize=9,
            wrap=True,
        )
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel("set")
    fig.suptitle(
        f"Do easy examples look alike? Spread (mean pairwise distance) of the easiest "
        f"and hardest {rec['fraction']:.0%} by {rec['score']}\nrelative to random sets "
        f"of the same classes: mean and 95% interval over {rec['settings']['repeats']} "
        "subsamples (below 1: more alike than random)",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path)


def _show(ax, image: np.ndarray) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_grid(result: Result, path: str) -> None:
    """The easiest (left) and hardest (right) examples of each shown class, each captioned with
    its label and the feature model's prediction (red when they differ)."""
    from .figures import pyplot, save

    plt = pyplot()

    names = result.class_names
    classes = sorted(result.grid)
    g = max(len(result.grid[c]["easy"]["index"]) for c in classes)
    cols = 2 * g + 1
    fig, axes = plt.subplots(
        len(classes),
        cols,
        figsize=(1.15 * (cols - 0.7), 1.45 * len(classes) + 0.9),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * g + [0.3] + [1] * g},
    )
    for r, c in enumerate(classes):
        for which, start in (("easy", 0), ("hard", g + 1)):
            item = result.grid[c][which]
            for j in range(g):
                ax = axes[r][start + j]
                if j >= len(item["index"]):
                    ax.axis("off")
                    continue
                _show(ax, item["images"][j])
                label = names[int(item["label"][j])]
                if item["pred"] is not None:
                    pred = names[int(item["pred"][j])]
                    wrong = pred != label
                    ax.set_xlabel(
                        f"{label}\npred: {pred}", fontsize=6, color="tab:red" if wrong else "black"
                    )
                else:
                    ax.set_xlabel(label, fontsize=6)
        axes[r][g].axis("off")
        axes[r][0].set_ylabel(names[c], fontsize=7, rotation=0, ha="right", va="center")
    axes[0][0].set_title("easiest →", fontsize=8, loc="left")
    axes[0][g + 1].set_title("hardest →", fontsize=8, loc="left")
    rec = result.record
    fig.suptitle(
        f"Easiest (left) and hardest (right) {g} examples per class by {rec['score']}; "
        f"caption: label, prediction\n({_feature_caption(rec)}; red: prediction differs "
        "from the label)",
        fontsize=9,
    )
    fig.tight_layout()
    save(fig, path)


def plot_mean_images(result: Result, path: str) -> None:
    """Per shown class, the mean image of its easy set, its random pool and its hard set."""
    from .figures import pyplot, save

    plt = pyplot()

    classes = sorted(result.mean_images)
    fig, axes = plt.subplots(
        3, len(classes), figsize=(max(6.0, 1.25 * len(classes) + 1.2), 4.8), squeeze=False
    )
    for j, c in enumerate(classes):
        for i, which in enumerate(("easy", "random", "hard")):
            _show(axes[i][j], result.mean_images[c][which])
            if i == 0:
                axes[i][j].set_title(result.class_names[c], fontsize=7)
            if j == 0:
                axes[i][j].set_ylabel(f"{which} mean", fontsize=8)
    rec = result.record
    fig.suptitle(
        f"Mean images per class: easiest {rec['fraction']:.0%}, a random sample, "
        f"hardest {rec['fraction']:.0%}\nby {rec['score']} (pixel intensity 0-1)",
        fontsize=9,
    )
    fig.tight_layout()
    save(fig, path)


def plot_density(result: Result, path: str) -> None:
    """Local sparsity (mean k-NN distance to same-class examples) against easiness, coloured by
    class, and the per-class Spearman correlations."""
    from .figures import pyplot, save

    plt = pyplot()

    rec = result.record
    dens = rec["density"]
    space = "features" if dens.get("features") is not None else "pixel"
    pts = result.density_points
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("tab10" if len(result.class_names) <= 10 else "tab20")
    for c in np.unique(pts["labels"]):
        sel = pts["labels"] == c
        few = len(np.unique(pts["labels"])) <= 10
        ax.scatter(
            pts["ease"][sel],
            pts[space][sel],
            s=4,
            alpha=0.5,
            color=cmap(int(c) % cmap.N),
            label=result.class_names[int(c)] if few else None,
        )
    ax.set_xlabel(f"{rec['score']} (higher: easier)")
    if len(pts[space]) and np.nanmin(pts[space]) > 0:
        ax.set_yscale("log")
    where = "feature space" if space == "features" else "pixel space"
    ax.set_ylabel(
        f"mean distance to {dens['k']} nearest same-class examples\n({where}; higher: sparser)"
    )
    rho = dens[space]["spearman"]
    ax.set_title(
        f"Local sparsity against easiness (Spearman {rho:+.2f} pooled)"
        if rho is not None
        else "Local sparsity against easiness",
        fontsize=9,
    )
    if len(np.unique(pts["labels"])) <= 10:
        ax.legend(fontsize=7, markerscale=3, loc="best")
    names = [d["name"] for d in dens[space]["per_class"]]
    x = np.arange(len(names))
    for offset, s, colour in ((-0.2, "pixel", "tab:gray"), (0.2, "features", "tab:purple")):
        if dens.get(s) is None:
            continue
        vals = [
            d["spearman"] if d["spearman"] is not None else np.nan for d in dens[s]["per_class"]
        ]
        bx.bar(
            x + offset,
            vals,
            width=0.4,
            color=colour,
            label="pixel space" if s == "pixel" else "feature space",
        )
    bx.axhline(0, color="0.3", lw=1)
    bx.set_xticks(x)
    bx.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    bx.set_ylabel("Spearman(k-NN distance, easiness)")
    bx.set_title("per class (negative: easy examples in denser regions)", fontsize=9)
    bx.legend(fontsize=7)
    fig.suptitle(f"Dataset bias as a number ({_feature_caption(rec)})", fontsize=10)
    fig.tight_layout()
    save(fig, path)


FIGURES = {
    "ratios.png": plot_ratios,
    "grid.png": plot_grid,
    "mean_images.png": plot_mean_images,
    "density.png": plot_density,
}


def write_outputs(result: Result, out_dir: str, force: bool = False) -> dict:
    """Write the figures and similarity.json (the manifest) into out_dir, built beside it and
    swapped into place (easyhard.outputs). An existing out_dir must be empty, or with `force` an
    earlier similarity output holding exactly the files its manifest lists. Returns the sealed
    record."""
    from .outputs import Output

    def build(work: str) -> dict:
        written = []
        for name, plot in FIGURES.items():
            if (
                name == "grid.png"
                and not result.grid
                or name == "mean_images.png"
                and not result.mean_images
            ):
                continue
            plot(result, os.path.join(work, name))
            written.append(name)
        return {**result.record, "figures": written}

    with Output(out_dir, MANIFEST, FORMAT, force=force, command="analyze similarity") as out:
        return out.write(build)


def run_similarity(
    cfg: SimilarityConfig,
    scores: str,
    out: str,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """`easyhard analyze similarity`: do the easiest examples of `scores` (a statistics file, a
    merged scores file, a run folder or a score folder) look alike, by `cfg`, written to folder
    `out`; returns the sealed record. Every check (the scores, the dataset and its fingerprint,
    the feature model, the device, where the output goes) runs before any image is read."""
    from .io import check_disjoint, check_replaceable
    from .runfolder import check_same_data
    from .scores import load_scores
    from .train import resolve_device

    score_file = resolve_score_path(scores)
    table = load_scores(score_file, cfg.window)
    dataset = cfg.load_dataset()
    check_same_data(score_file, table, cfg, dataset)
    if cfg.score not in table.scores:
        raise ValueError(
            f"{score_file} holds no {cfg.score!r} score (it has {', '.join(sorted(table.scores))})"
        )
    device = resolve_device(cfg.device)
    source = score_source(score_file, table.metadata)
    feature_source = find_feature_model(cfg.features, source, dataset.fingerprint)
    model, info = None, {}
    if feature_source is not None:
        model, info = load_feature_model(feature_source.checkpoint, dataset, device)
        feature_source.arch = feature_source.arch or info["arch"]
    check_disjoint(
        out,
        {
            "scores input": score_file,
            "dataset": getattr(dataset, "base", None) or dataset.root,
            "file list": cfg.file_list,
            "feature model": feature_source and feature_source.checkpoint,
        },
    )
    check_replaceable(out, MANIFEST, FORMAT, force)
    if feature_source is not None:
        log(f"features: {feature_source.describe()}")
    result = analyze(
        table,
        dataset,
        fraction=cfg.fraction,
        score=cfg.score,
        sample_size=cfg.sample_size,
        repeats=cfg.repeats,
        pool_size=cfg.pool_size,
        neighbours=cfg.neighbours,
        max_classes=cfg.max_classes,
        pixel_size=cfg.pixel_size,
        grid_examples=cfg.grid_examples,
        seed=cfg.seed,
        feature_model=model,
        feature_source=feature_source,
        device=device,
        batch_size=cfg.batch_size,
        crop=info.get("crop", 224),
        workers=cfg.workers,
        log=log,
    )
    result.record["score_file"] = os.path.abspath(score_file)
    result.record["window"] = cfg.window
    result.record["scoring_runs"] = [os.path.abspath(r) for r in source.runs]
    return write_outputs(result, out, force)


def written(record: dict) -> list[str]:
    """The files of a similarity folder, by name, from its record."""
    return [MANIFEST, *record["figures"]]


# ---------------------------------------------------------------------------- the report's view
def read_record(folder: str) -> dict | None:
    """The record of a similarity folder, or None when `folder` holds none."""
    from .io import read_json_object

    record = read_json_object(os.path.join(folder, MANIFEST))
    return record if (record or {}).get("format") == FORMAT else None


def record_fingerprint(record: dict) -> str | None:
    """The dataset fingerprint of the analysed data."""
    return (record.get("dataset") or {}).get("fingerprint")


def _stat_text(stat: Any) -> str:
    """'mean [low, high]' of a {mean, low, high} summary; 'n/a' otherwise."""
    if not isinstance(stat, dict) or not isinstance(stat.get("mean"), (int, float)):
        return "n/a"
    lo, hi = stat.get("low"), stat.get("high")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        return f"{stat['mean']:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{stat['mean']:.3f}"


def report_blocks(folder: str, record: dict) -> list[tuple]:
    """The report's section for one similarity folder, as blocks ("text", "table", "figure")."""
    res, blocks = record, []
    if res.get("note"):
        blocks.append(("text", str(res["note"])))
    rows = []
    for space in SPACES:
        entry = res.get(space)
        if not isinstance(entry, dict):
            continue
        for measure, part in (
            ("pairwise distance", entry),
            ("distance to centroid", entry.get("centroid") or {}),
        ):
            cells = [_stat_text(part.get(f"{s}_over_random")) for s in ("easy", "hard")]
            rows.append([space, measure, *cells])
    if rows:
        blocks.append(
            (
                "text",
                f"Spread of the {res.get('fraction', 0.1):.0%} easiest and hardest examples "
                "over the spread of class-matched random sets (mean and 95% interval over "
                "subsamples drawn without replacement): below 1, the set is tighter (alike); "
                "above 1, more diverse.",
            )
        )
        blocks.append(("table", ["space", "measure", "easy / random", "hard / random"], rows))
    density = res.get("density")
    if isinstance(density, dict):
        rows = [
            [
                space,
                (density.get(space) or {}).get("spearman"),
                (density.get(space) or {}).get("mean_per_class"),
            ]
            for space in SPACES
            if isinstance(density.get(space), dict)
        ]
        if rows:
            blocks.append(
                (
                    "text",
                    "Dataset bias as a number: Spearman correlation of each example's local "
                    "sparsity (mean distance to its nearest same-class neighbours) with its "
                    "easiness; negative means easy examples sit in denser regions.",
                )
            )
            blocks.append(("table", ["space", "Spearman (pooled)", "mean over classes"], rows))
    from .figures import figure_blocks

    return blocks + figure_blocks(folder)


# ---------------------------------------------------------------------------- the table
def _fmt(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]"


def format_table(record: dict) -> str:
    """The terminal table of a similarity record."""
    lines = []
    ds = record["dataset"]
    lines.append(
        f"easiest and hardest {record['fraction']:.0%} by {record['score']} of "
        f"{ds['name']}: {record['examples_used']} examples"
        f" ({record['excluded']} never presented, left out)"
    )
    fm = record.get("feature_model")
    if fm is None:
        lines.append(NO_FEATURES_NOTE.replace("`features`", "--features"))
    else:
        lines.append(
            f"features: {os.path.basename(fm['run'] or fm['checkpoint'])} ({fm['arch']}), "
            f"{fm['how']}"
        )
        if fm["self_scored"]:
            lines.append(f"NOTE: {SELF_SCORED_NOTE}")
    st = record["settings"]
    lines.append(
        f"spread = mean pairwise distance; ratio to a class-matched random set: mean "
        f"[95% interval] over {st['repeats']} subsamples (without replacement)"
    )
    spaces = [s for s in SPACES if record.get(s) is not None]
    header = f"{'set':<14}" + "".join(
        f"{s + ' easy/random':<24}{s + ' hard/random':<24}" for s in spaces
    )
    lines.append(header)
    rows = [("all", record)] + [(pc["name"], pc) for pc in record["per_class"]]
    for name, item in rows:
        cells = "".join(
            f"{_fmt((item.get(s) or {}).get('easy_over_random')):<24}"
            f"{_fmt((item.get(s) or {}).get('hard_over_random')):<24}"
            for s in spaces
        )
        lines.append(
            f"{name[:13]:<14}{cells}"
            if item.get(spaces[0]) is not None
            else f"{name[:13]:<14}skipped: {item.get('skipped', '')}"
        )
    dens = record["density"]
    for s in spaces:
        d = dens.get(s)
        if d is None:
            continue
        pooled = "-" if d["spearman"] is None else f"{d['spearman']:+.2f}"
        mean = "-" if d["mean_per_class"] is None else f"{d['mean_per_class']:+.2f}"
        score = record.get("score") or "easiness"
        lines.append(
            f"local sparsity ({s}, {dens['k']}-NN distance): Spearman with "
            f"{score if score == 'easiness' else score + ' (oriented: higher is easier)'} "
            f"{pooled} pooled, {mean} mean per class (negative: easy examples are in "
            "denser regions)"
        )
    return "\n".join(lines)
