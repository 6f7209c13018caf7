"""Configuration of easyhard's jobs: one dataclass per job, the single source of its options.

Every field carries its help text, choices and range in its metadata (`param(...)`). The command
line generates its options from these dataclasses (``easyhard.cli.config_options``), a TOML file
given as ``--config FILE`` supplies any field by name (``epochs = 1``, ``archs = ["convnet"]``),
and ``validate()`` applies the same ranges to a configuration built in Python. This module
imports no torch, so that ``easyhard --help`` answers at once.

    cfg = ScoreConfig(dataset="fashion-mnist", archs=("resnet20",), epochs=4)
    cfg.validate()
    text = to_toml(cfg)                      # the resolved configuration, as a --config file
    same = from_mapping(ScoreConfig, load_toml_file("score-config.toml"))
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .datasets import DATASETS
from .io import LINK_MODES
from .scores import DIRECTION
from .select import STRATEGIES

SCHEDULES = ("onecycle", "cosine", "step")  # learning-rate schedules of the scoring engine
AMP_MODES = ("auto", "bf16", "fp16", "fp32")  # auto: bf16 on GPU, fp32 on CPU
OPTIMIZERS = ("sgd", "adamw")
PRUNE_RULES = ("none", "easiness", "loss", "random")  # pruning during training (easyhard.prune)
#: The settings of the pruning rules (TrainingRecipe): they act only with a rule (`prune`).
PRUNE_SETTINGS = ("prune_ratio", "prune_anneal", "prune_window", "prune_threshold", "prune_rescale")
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 32-bit
RANKING_SCORES = tuple(n for n, d in DIRECTION.items() if d != "neither")  # scores select ranks by


def default_prune_settings() -> dict[str, Any]:
    """The pruning settings (PRUNE_SETTINGS) at their defaults: InfoBatch's published ones."""
    return {
        f.name: f.default for f in dataclasses.fields(TrainingRecipe) if f.name in PRUNE_SETTINGS
    }


def param(
    help: str,
    *,
    choices: Sequence[str] | None = None,
    min: float | None = None,
    max: float | None = None,
    max_open: bool = False,
    min_open: bool = False,
    type: type | None = None,
    flag: str | None = None,
    multiple: bool = False,
    required: bool = False,
    pattern: tuple[str, str] | None = None,
) -> dict:
    """Metadata of a configuration field: its help, choices, range [min, max] (an end excluded
    with min_open / max_open), value type (needed when the default is None), option spelling
    (`flag`, e.g.
    "--arch" or "--balanced/--global"; default --field-name), whether the option repeats
    (`multiple`, for tuple fields), whether it must be given, and for text a `pattern`
    (regular expression, what it allows in words) every value must match."""
    return {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "min": min,
        "max": max,
        "max_open": max_open,
        "min_open": min_open,
        "type": type,
        "flag": flag,
        "multiple": multiple,
        "required": required,
        "pattern": pattern,
    }


def setting(default: Any, help: str, **limits: Any) -> Any:
    """A configuration field: its default, and ``param(help, **limits)`` as its metadata."""
    return field(default=default, metadata=param(help, **limits))


class ConfigError(ValueError):
    """A configuration value that is out of range, of the wrong type, or unknown."""


@dataclass
class Config:
    """Base of every job configuration: range and choice checks from the fields' metadata."""

    def validate(self) -> None:
        """Raise ConfigError naming the first field whose value is not allowed."""
        for f in dataclasses.fields(self):
            check_value(f, getattr(self, f.name))
        window, score = getattr(self, "window", None), getattr(self, "score", None)
        if isinstance(window, int) and isinstance(score, str):  # a score ranked over a window
            from .scores import check_window

            try:
                check_window([s.strip() for s in score.split(",")], window)
            except ValueError as e:
                raise ConfigError(str(e)) from None


def value_type(f: dataclasses.Field) -> type:
    """The Python type of a field's values (for tuples: of the items)."""
    meta = f.metadata
    if meta.get("type") is not None:
        return meta["type"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, tuple):
        return type(default[0]) if default else str
    return type(default)


def check_value(f: dataclasses.Field, value: Any) -> None:
    meta, name = f.metadata, f.name
    if value is None:
        if f.default is None and not meta.get("required"):
            return
        raise ConfigError(f"`{name}` must be given")
    items = value if meta.get("multiple") else (value,)
    if meta.get("multiple") and not isinstance(value, (tuple, list)):
        raise ConfigError(f"`{name}` must be a list, got {value!r}")
    want = value_type(f)
    for v in items:
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"`{name}` must be {want.__name__}, got {v!r}")
        if want is float and not math.isfinite(v):
            raise ConfigError(f"`{name}` must be a finite number, got {v!r}")
        if meta.get("pattern") and not re.fullmatch(meta["pattern"][0], v):
            raise ConfigError(f"`{name}` must be {meta['pattern'][1]}, got {v!r}")
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(f"`{name}` must be one of {', '.join(meta['choices'])}, got {v!r}")
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (v <= lo if meta.get("min_open") else v < lo):
            raise ConfigError(
                f"`{name}` must be {'above' if meta.get('min_open') else 'at least'} "
                f"{lo}, got {v!r}"
            )
        if hi is not None and (v >= hi if meta.get("max_open") else v > hi):
            raise ConfigError(
                f"`{name}` must be {'below' if meta.get('max_open') else 'at most'} {hi}, got {v!r}"
            )


# ---------------------------------------------------------------------------- shared fields
# A setting that several configurations hold is defined here once: its type, default, range and
# checks; each configuration gives only its own help where the meaning differs.
DEVICE = (r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N")


def window_field(help: str) -> Any:
    """`window`: the first K epochs counted by the scores that have a window (scores.WINDOWED:
    all but forgetting and margin; None: every recorded epoch)."""
    return setting(None, help, min=1, type=int)


def device_field() -> Any:
    return setting("auto", DEVICE[1] + ".", pattern=DEVICE)


def workers_field(help: str = "Decoding threads / workers for image-folder datasets.") -> Any:
    return setting(4, help, min=1)


def crop_field() -> Any:
    return setting(224, "Image size for image-folder datasets.", min=8)


def amp_field() -> Any:
    return setting("auto", "Mixed precision; auto: bf16 on GPU, fp32 on CPU.", choices=AMP_MODES)


def skip_corrupt_field(help: str) -> Any:
    return setting(False, help)


def check_archs(names: Sequence[str], setting: str) -> None:
    """Refuse architectures that are not registered (easyhard.models), naming the setting."""
    from .models import available_models

    unknown = [a for a in names if a not in available_models()]
    if unknown:
        raise ConfigError(
            f"unknown architecture(s) {', '.join(unknown)} (`{setting}`); choose from "
            f"{', '.join(available_models())}"
        )


def _comma_list(name: str, text: str) -> list[str]:
    # "a,b", or a TOML list that reached a text option as its Python spelling "['a', 'b']"
    items = [t.strip().strip("[]'\"").strip() for t in str(text).split(",")]
    items = [t for t in items if t]
    if not items:
        raise ConfigError(f"`{name}` is empty: give a comma-separated list")
    return items


def fraction_items(name: str, text: str, *, zero_ok: bool = False, why: str = "") -> list[float]:
    """The distinct fractions of a comma-separated setting ("0.1,30%"), ascending, each in
    (0, 1), or [0, 1) with `zero_ok` (zeros then dropped); `why` explains the upper end."""
    out = set()
    for item in _comma_list(name, text):
        try:
            v = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise ConfigError(
                f"`{name}` must be numbers such as 0.3 or 30%, got {item!r}"
            ) from None
        if not (0 <= v if zero_ok else 0 < v) or not v < 1:
            low = "[0" if zero_ok else "(0"
            raise ConfigError(f"`{name}` must lie in {low}, 1){why}, got {item}")
        if v > 0:
            out.add(round(v, 10))
    return sorted(out)


# ---------------------------------------------------------------------------- the jobs
@dataclass
class DataConfig(Config):
    """Which dataset: the options of every command that reads one."""

    dataset: str = setting("fashion-mnist", "The dataset (its training split).", choices=DATASETS)
    data_dir: str | None = setting(
        None,
        "Dataset root (default for fashion-mnist: /usr/share/datasets/fashion-mnist).",
        type=str,
    )
    file_list: str | None = setting(
        None, "imagefolder: a 'relative/path label' list, paths under --data-dir.", type=str
    )
    num_samples: int = setting(2048, "synthetic only: examples.", min=1)
    num_classes: int = setting(10, "synthetic only: classes.", min=2)
    image_size: int = setting(28, "synthetic only: image side in pixels.", min=4)
    synthetic_seed: int = setting(0, "synthetic only: the seed of the data.", min=0, max=SEED_MAX)

    #: The options that only some datasets use (the others: every dataset).
    DATASET_ONLY = {
        "data_dir": ("fashion-mnist", "cifar10", "cifar100", "imagefolder"),
        "file_list": ("imagefolder",),
        "num_samples": ("synthetic",),
        "num_classes": ("synthetic",),
        "image_size": ("synthetic",),
        "synthetic_seed": ("synthetic",),
    }

    def inapplicable(self) -> list[str]:
        """The options this configuration's dataset does not use."""
        return [k for k, kinds in self.DATASET_ONLY.items() if self.dataset not in kinds]

    def inapplicable_message(self, name: str, subject: str | None = None) -> str:
        """Why option `name` is refused (`subject`: how to name it, default `name`)."""
        subject = subject or f"`{name}`"
        if self.dataset == "synthetic":
            return (
                f"{subject} is not an option of synthetic data, which is generated from "
                "`num_samples`, `num_classes`, `image_size` and `synthetic_seed` (a compressed "
                "synthetic subset, subset.npz, is read with numpy)"
            )
        users = " and ".join(self.DATASET_ONLY[name])
        return f"{subject} is an option of {users} only, not of {self.dataset}: leave it out"

    def validate(self) -> None:
        super().validate()
        for name in self.inapplicable():  # the synthetic options' defaults cannot be told apart
            if name in ("data_dir", "file_list") and getattr(self, name) is not None:
                raise ConfigError(self.inapplicable_message(name))

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of datasets.load_dataset besides name, root and split."""
        extra: dict[str, Any] = {"file_list": self.file_list}
        if self.dataset == "synthetic":
            extra.update(
                num_samples=self.num_samples,
                num_classes=self.num_classes,
                image_size=self.image_size,
                seed=self.synthetic_seed,
            )
        return extra

    def load_dataset(self, split: str = "train"):
        """The dataset these settings name (datasets.load_dataset), one split of it."""
        from .datasets import load_dataset

        return load_dataset(self.dataset, self.data_dir, split, **self.dataset_kwargs())


@dataclass
class TrainingRecipe(Config):
    """How one network is trained by the scoring engine (easyhard.train): optimiser, schedule,
    precision, seeds, the reading of image folders. One part of every configuration that trains
    (ScoreConfig, the experiments' configurations), composed beside DataConfig and their own
    settings; its fields are flat settings (TOML keys, flags) like every other."""

    epochs: int = setting(2, "Training epochs per run.", min=1)
    batch_size: int = setting(256, "Examples per step, per process.", min=1)
    lr: float = setting(0.2, "Peak learning rate.", min=0)
    momentum: float = setting(0.9, "SGD momentum (adamw: its beta1).", min=0, max=1, max_open=True)
    nesterov: bool = setting(True, "Nesterov momentum.")
    weight_decay: float = setting(5e-4, "L2 weight decay.", min=0)
    label_smoothing: float = setting(
        0.0, "Cross-entropy label smoothing.", min=0, max=1, max_open=True
    )
    schedule: str = setting("onecycle", "Learning-rate schedule.", choices=SCHEDULES)
    warmup_epochs: float = setting(
        0.5, "Linear warm-up of the cosine and step schedules, in epochs.", min=0
    )
    amp: str = amp_field()
    compile: bool = setting(False, "torch.compile the model.")
    device: str = device_field()
    seed: int = setting(0, "Run k of every architecture uses seed + k.", min=0, max=SEED_MAX)
    init_seed: int | None = setting(
        None,
        "Seed of the initialisation, the same for every run (default: the run's seed).",
        type=int,
        min=0,
        max=SEED_MAX,
    )
    data_seed: int | None = setting(
        None,
        "Seed of the data order and augmentation, the same for every run (default: the run's "
        "seed).",
        type=int,
        min=0,
        max=SEED_MAX,
    )
    optimizer: str = setting(
        "sgd",
        "sgd (momentum, Nesterov) or adamw (give a suitable --lr, e.g. 1e-3).",
        choices=OPTIMIZERS,
    )
    crop: int = crop_field()
    workers: int = workers_field()
    skip_corrupt: bool = skip_corrupt_field(
        "Image folders: drop unreadable images (logged; recorded as never presented) "
        "instead of stopping with an error naming the file."
    )
    max_nonfinite_steps: int = setting(
        50, "Stop as diverged after this many consecutive steps with a NaN or infinite loss.", min=1
    )
    # Pruning during training (easyhard.prune); the defaults are InfoBatch's published settings.
    prune: str = setting(
        "none",
        "Skip examples during training: easiness (a share of the learned ones each epoch), "
        "loss (InfoBatch: below-mean loss, at random), random (the control: as many as "
        "easiness would, at random) or none.",
        choices=PRUNE_RULES,
    )
    prune_ratio: float = setting(
        0.5,
        "The share r of the candidates skipped each pruned epoch.",
        min=0,
        max=1,
        min_open=True,
        max_open=True,
    )
    prune_anneal: float = setting(
        0.125,
        "The final share of the epochs trained on the full data.",
        min=0,
        max=1,
        max_open=True,
    )
    prune_window: int = setting(
        2,
        "easiness: an example is learned when correct at each of its last K presentations.",
        min=1,
        max=255,
    )
    prune_threshold: float = setting(
        0.9,
        "easiness: the mean true-class probability over those K a learned example reaches.",
        min=0,
        max=1,
    )
    prune_rescale: bool = setting(
        True,
        "Scale the loss of the kept candidates by 1/(1 - r), as InfoBatch does (the "
        "expected gradient of the full data).",
        flag="--prune-rescale/--no-prune-rescale",
    )

    def inert_prune_settings(self) -> list[str]:
        """The pruning settings set away from their defaults while `prune` is none."""
        if self.prune != "none":
            return []
        return [n for n, v in default_prune_settings().items() if getattr(self, n) != v]

    def check_prune_settings(self) -> None:
        """Refuse pruning settings that would change nothing: set while `prune` is none."""
        inert = self.inert_prune_settings()
        if inert:
            raise ConfigError(
                f"`{inert[0]}` is set, but `prune` is none: pruning's settings change nothing "
                "without a rule; give `prune` (easiness, loss or random) or leave them out"
            )

    def check_seeds(self, count: str, what: str, also: Sequence[str] = ()) -> None:
        """Refuse as many consecutive trainings as the setting `count` says (runs, seeds) when
        the last one's seed would pass SEED_MAX (seeds are 32-bit); `what` names a training."""
        n = getattr(self, count)
        for name in ("seed", "init_seed", "data_seed", *also):
            start = getattr(self, name)
            if start is not None and start + n - 1 > SEED_MAX:
                raise ConfigError(
                    f"{what} {n - 1} would use {name} {start + n - 1}, beyond {SEED_MAX} "
                    f"(seeds are 32-bit): lower `{name}` or `{count}`"
                )


@dataclass
class ScoreConfig(TrainingRecipe, DataConfig):
    """Everything that defines a scoring job (saved with every run): the data, the training
    recipe, and which runs of which architectures record what."""

    archs: tuple[str, ...] = setting(
        ("convnet", "resnet20"),
        "Architecture; repeat for several (see `easyhard models`).",
        flag="--arch",
        multiple=True,
    )
    runs: int = setting(1, "Runs per architecture (seeds seed, seed+1, ...).", min=1)
    clean_every: int = setting(
        0, "Record a clean view (eval mode, no augmentation) every K epochs (0: off).", min=0
    )
    clean_steps: int = setting(
        0, "Record a clean view every K steps inside the first epoch (0: off).", min=0
    )
    window: int | None = window_field(
        "The first epochs the merged scores count (forgetting and margin, which have no "
        "window, are then left out; default: all)."
    )

    def __post_init__(self) -> None:
        if isinstance(self.archs, (list, str)):
            self.archs = (self.archs,) if isinstance(self.archs, str) else tuple(self.archs)

    def validate(self) -> None:
        super().validate()
        self.check_prune_settings()
        if not self.archs:
            raise ConfigError("give at least one architecture (`archs`)")
        twice = sorted({a for a in self.archs if self.archs.count(a) > 1})
        if twice:
            raise ConfigError(
                f"architecture {', '.join(twice)} is given twice (`archs`): each is trained once; "
                "for more runs of one architecture use `runs`"
            )
        if self.window is not None and self.window > self.epochs:
            raise ConfigError(
                f"`window` ({self.window}) counts more epochs than the "
                f"{self.epochs} trained (`epochs`)"
            )
        if self.clean_every > self.epochs:
            raise ConfigError(
                f"`clean_every` ({self.clean_every}) is more than the {self.epochs} epoch(s) "
                "trained (`epochs`): no clean view would ever be recorded"
            )
        self.check_seeds("runs", "run")
        check_archs(self.archs, "archs")


@dataclass
class SelectConfig(Config):
    """How a subset is chosen by scores (easyhard.select.select)."""

    keep: str | None = setting(
        None, "How many to keep: a fraction (0.7, 70%) or a count (700).", type=str, required=True
    )
    score: str = setting("easiness", "The score that ranks examples.", choices=RANKING_SCORES)
    # The defaults are what measured best on real Fashion-MNIST (docs/fashion-mnist.md,
    # "Compression experiment"): class-balanced coverage-centric selection by easiness.
    strategy: str = setting(
        "stratified",
        "Stratify across score bins (coverage-centric; measured best at 70% kept, see the "
        "README), keep the hardest (drop the easiest: the paper's compression), the easiest, "
        "or a random draw.",
        choices=STRATEGIES,
    )
    balanced: bool = setting(
        True,
        "Class-balanced budgets (proportional to class sizes) or one global ranking.",
        flag="--balanced/--global",
    )
    cut_hardest: float = setting(
        0.0,
        "First drop this fraction of the very hardest examples (over the whole set, before "
        "class balancing); --keep still counts every example.",
        min=0,
        max=1,
        max_open=True,
    )
    window: int | None = window_field(
        "The first epochs the scores count (forgetting and margin have no window; default: all)."
    )
    bins: int = setting(50, "Score bins of the stratified strategy.", min=1)
    seed: int = setting(0, "Seed of the random and stratified strategies.", min=0, max=SEED_MAX)
    tie_seed: int | None = setting(
        None,
        "Break ties of the score by a permutation from this seed (default: by dataset index); "
        "use it with easiness_plain, where most examples tie.",
        type=int,
        min=0,
        max=SEED_MAX,
    )


@dataclass
class CompressConfig(SelectConfig, DataConfig):
    """A subset written out as a dataset of the source's format."""

    split: str = setting("train", "The split the scores are of.", choices=("train", "test"))
    link: str = setting("hard", "How image files enter the new tree.", choices=LINK_MODES)


# ---------------------------------------------------------------------------- files
def load_toml_file(path: str) -> dict[str, Any]:
    """Read a TOML configuration file (tomllib)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration file {path} ({e.strerror})") from e
    try:
        text = raw.decode("utf-8-sig")  # an editor's byte-order mark is not a TOML statement
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}): TOML files are "
            "UTF-8; save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e})") from e


def check_keys(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The settings of `data` that are fields of `cls`; refuses any other key, naming the key
    and the file, except a retired setting (cls.RETIRED) that holds a value earlier versions
    wrote, which is dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    retired = getattr(cls, "RETIRED", {})
    for key in sorted(set(data) & set(retired) - names):
        allowed = retired[key]
        if allowed is not None and data[key] not in allowed:
            raise ConfigError(
                f"{where}: {key} = {_toml_value(data[key])} is not a setting of the "
                f"{cls.KIND} experiment (its trainings are one run each, recording no clean view"
                "; more trainings come from `seeds`)"
            )
    unknown = sorted(set(data) - names - set(retired))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; the settings are "
            f"{', '.join(sorted(names))}"
        )
    return {k: v for k, v in data.items() if k in names}


def typed_values(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A configuration file's values, checked for type (naming the key and the file; the command
    line would otherwise convert them: epochs = 1.5 read as 1, compile = "yes" as true), with a
    single value of a list setting made a list (archs = "convnet")."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        f = fields[key]
        want = value_type(f)
        multiple = f.metadata.get("multiple")
        listed = key in getattr(cls, "LISTS", ())  # comma-separated text, or a TOML list
        items = list(value) if (multiple or listed) and isinstance(value, list) else [value]
        for n, v in enumerate(items):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if want is str and number:  # keep = 0.7: a setting written as text on the command line
                items[n] = str(v)
                continue
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            ok = ok or (want is float and number and isinstance(v, int))
            if not ok:
                kind = {int: "an integer", float: "a number", bool: "true or false"}
                shown = _toml_value(v) if isinstance(v, (bool, int, float, str, list)) else repr(v)
                raise ConfigError(
                    f"{where}: {key} = {shown} is not {kind.get(want, 'a string')}"
                    + (" (or a list of them)" if multiple else "")
                )
        out[key] = items if multiple or (listed and isinstance(value, list)) else items[0]
    return out


def from_mapping(cls: type, data: Mapping[str, Any], where: str = "configuration"):
    """A validated `cls` from a mapping of field names (unknown keys refused)."""
    data = check_keys(cls, data, where)
    cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    cfg.validate()
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def settings(cfg: Config) -> dict[str, Any]:
    """A configuration's settings as they enter files and identities (config.json, the job's
    TOML, runs' and experiments' identities): every field, but while `prune` is none neither it
    nor the pruning settings at their defaults, so that what was written before pruning existed
    stays the same (a pruning setting changed from its default is kept: the compression
    experiment's dynamic strategies use them with `prune` none)."""
    d = dataclasses.asdict(cfg)
    if d.get("prune", "none") == "none":
        default = default_prune_settings()
        d = {k: v for k, v in d.items() if k != "prune" and not (k in default and v == default[k])}
    return d


def to_toml(cfg: Config, header: str = "") -> str:
    """The configuration as a TOML file that --config reads back (None fields, and options the
    dataset does not use, are left out)."""
    lines = [f"# {line}" for line in header.splitlines()]
    unused = set(cfg.inapplicable()) if isinstance(cfg, DataConfig) else set()
    kept = settings(cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is not None and f.name not in unused and f.name in kept:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class OverlapConfig(Config):
    """Which score, window and sets `easyhard analyze overlap` compares (easyhard.overlap)."""

    score: str = setting(
        "easiness",
        "The score that ranks examples (easiness_plain: the paper's fraction correct).",
        choices=RANKING_SCORES,
    )
    window: int | None = window_field(
        "The first K epochs the score counts (the paper's early training; forgetting and "
        "margin have no window; default: all)."
    )
    view: str = setting(
        "train",
        "Which record of a run folder: the training view or the clean view.",
        choices=("train", "clean"),
    )
    ps: tuple[float, ...] = setting(
        (0.01, 0.05, 0.1, 0.2, 0.3, 0.5),
        "Size of the easy and hard sets as a fraction of the examples; repeat for several.",
        flag="--p",
        multiple=True,
        min=0,
        max=1,
        min_open=True,
    )
    tie_seed: int = setting(
        0, "Seed of the per-run permutations that order tied scores.", min=0, max=SEED_MAX
    )
    kendall_max: int = setting(
        200_000, "Kendall's tau on a fixed random sample of at most this many examples.", min=100
    )


@dataclass
class ReportConfig(Config):
    """What `easyhard report` shows (easyhard.report)."""

    title: str = setting("easyhard report", "The page's title.")
    window: int | None = window_field(
        "The first epochs the runs' scores count in the figures (default: all)."
    )
    examples: bool = setting(
        True, "Image grids of the easiest and hardest examples (reads the runs' dataset)."
    )


@dataclass
class SimilarityConfig(DataConfig):
    """How `easyhard analyze similarity` measures whether easy examples look alike
    (easyhard.similarity): the sets, the subsampling budget and the feature model."""

    features: str | None = setting(
        None,
        "Feature model: a run folder or its checkpoint.pt (default: a run in the scores' "
        "folder that did not produce them; else the scoring run itself, which every output "
        "then says).",
        type=str,
    )
    score: str = setting(
        "easiness", "The score that defines easy and hard.", choices=RANKING_SCORES
    )
    window: int | None = window_field(
        "The first epochs the score counts (a run's statistics file only; forgetting and "
        "margin have no window; default: all)."
    )
    fraction: float = setting(
        0.1,
        "Size of the easy and the hard set: this fraction of each class (and of all examples).",
        min=0.001,
        max=0.5,
    )
    sample_size: int = setting(
        100, "Examples in one subsample of a set (at most half the set).", min=4
    )
    repeats: int = setting(
        50, "Subsamples per set (drawn without replacement) for the mean and 95% interval.", min=5
    )
    pool_size: int = setting(
        1000,
        "Per class: the random examples that random sets are drawn from and the local density "
        "is measured on.",
        min=20,
    )
    neighbours: int = setting(
        10, "Local density: mean distance to this many nearest same-class neighbours.", min=1
    )
    max_classes: int = setting(
        50,
        "Per-class statistics for at most this many classes (a seeded random choice when there "
        "are more; the overall statistics use every class).",
        min=1,
    )
    pixel_size: int | None = setting(
        None,
        "Pixel space: images resized (shorter side) and centre-cropped to this size (default: "
        "the native size of in-memory datasets, 32 for image folders).",
        min=4,
        type=int,
    )
    grid_examples: int = setting(
        6, "Image grid: this many easiest and hardest examples per class.", min=1, max=20
    )
    batch_size: int = setting(512, "Images per forward pass of the feature model.", min=1)
    device: str = device_field()
    workers: int = workers_field("Image-folder reading threads.")
    seed: int = setting(
        0,
        "Seed of every random choice (sets' tie order, subsamples, random sets, pools).",
        min=0,
        max=SEED_MAX,
    )

    def validate(self) -> None:
        super().validate()
        if self.pool_size < self.sample_size:
            raise ConfigError(
                f"`pool_size` ({self.pool_size}) must be at least `sample_size` "
                f"({self.sample_size}): random sets are drawn from the pool"
            )


@dataclass
class StudyConfig(ScoreConfig):
    """The main job (`easyhard study`): a scoring job, plus the extra seeds that make a pair of
    runs differ only in seed."""

    archs: tuple[str, ...] = setting(
        ("resnet8", "convnet"),
        "Architecture; repeat for several (see `easyhard models`). The first also runs with "
        "the next seed(s). Default: a residual and a plain network cheap enough for a 2-core "
        "CPU.",
        flag="--arch",
        multiple=True,
    )
    seed_runs: int = setting(
        1, "Extra runs of the first architecture with seeds seed+1, seed+2, ... (0: none).", min=0
    )


# ---------------------------------------------------------------------------- experiments
REMOVAL_ORDERS = ("easiest", "hardest", "random")  # what a removal cell removes
COMPRESSION_STRATEGIES = STRATEGIES  # what a compression cell keeps: select's strategies
#: The compression experiment's dynamic strategies: the full data, pruned during training by one
#: of easyhard.prune's rules (no ranking, no scoring cost: the run's own record chooses).
DYNAMIC_STRATEGIES = tuple(f"prune-{rule}" for rule in PRUNE_RULES if rule != "none")
BUDGETS = ("epochs", "steps")  # a cell trains as many epochs, or as many steps, as the full data


@dataclass
class ExperimentConfig(TrainingRecipe, DataConfig):
    """What the experiments on subsets share (easyhard.experiments): the data, the training
    recipe with one architecture, the ranking scores, the seeds, the budget. The list settings
    are comma-separated on the command line ("0.1,0.3") and lists or strings in a --config file."""

    KIND = "experiment"
    LISTS = ("score", "budget")  # comma-separated list settings (class attributes, not fields)
    #: Settings that resolved configurations of earlier versions hold (ScoreConfig's, which the
    #: experiments then inherited) and that are not an experiment's: a --config file may still
    #: hold them, with the only values those versions wrote, and they are dropped.
    RETIRED = {"runs": (1,), "clean_every": (0,), "clean_steps": (0,), "archs": None}

    epochs: int = setting(
        2,
        "Training epochs on the full data (the reference); the epochs budget gives every "
        "subset as many, the steps budget as many optimizer steps.",
        min=1,
    )
    seed: int = setting(0, "Training seed k (of --seeds) is seed + k.", min=0, max=SEED_MAX)
    window: int | None = window_field(
        "Early epochs of the statistics file counted by the ranking score (default: all recorded)."
    )
    arch: str = setting("convnet", "Architecture, one per experiment (see `easyhard models`).")
    seeds: int = setting(
        3, "Training seeds per cell (seed, seed+1, ...): the error bars are over them.", min=1
    )
    balanced: bool = setting(
        False,
        "Choose the same fraction of every class, or rank all examples together.",
        flag="--balanced/--global",
    )
    score: str = setting(
        "easiness",
        "Ranking score(s), comma-separated: " + ", ".join(RANKING_SCORES) + " (easiness_plain: "
        "the paper's fraction correct).",
    )
    budget: str = setting(
        "epochs",
        "Training budget(s), comma-separated: epochs (--epochs over every subset: fewer steps "
        "for smaller ones) or steps (the full data's optimizer steps for every subset).",
    )
    selection_seed: int = setting(
        0,
        "Ties of the ranking score are broken by a permutation from this seed; random (and "
        "stratified) selection for training seed k draws with selection_seed + k.",
        min=0,
        max=SEED_MAX,
    )

    def __post_init__(self) -> None:
        for name in self.LISTS:  # a TOML list -> "a,b"
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, ",".join(str(v) for v in value))

    def _choices(self, name: str, allowed: Sequence[str]) -> list[str]:
        items = list(dict.fromkeys(_comma_list(name, getattr(self, name))))
        bad = [i for i in items if i not in allowed]
        if bad:
            raise ConfigError(f"`{name}` must be among {', '.join(allowed)}, got {bad[0]!r}")
        return items

    def score_list(self) -> list[str]:
        return self._choices("score", RANKING_SCORES)

    def budget_list(self) -> list[str]:
        return [b for b in BUDGETS if b in self._choices("budget", BUDGETS)]

    def prunes_itself(self) -> bool:
        """Whether some of the experiment's trainings prune with the pruning settings although
        `prune` is none (the compression experiment's dynamic strategies)."""
        return False

    def validate(self) -> None:
        super().validate()
        check_archs((self.arch,), "arch")
        if not self.prunes_itself():
            self.check_prune_settings()
        self.check_seeds("seeds", "training seed", also=("selection_seed",))
        self.score = ",".join(self.score_list())
        self.budget = ",".join(self.budget_list())
        if self.prune != "none" and "steps" in self.budget_list():
            raise ConfigError(
                "`prune` runs on an epoch budget: the steps budget (a fixed number of optimizer "
                "steps) cannot be combined with pruning during training; use --budget epochs"
            )


@dataclass
class RemovalConfig(ExperimentConfig):
    """The removal experiment: what to remove (orders, fractions), on top of ExperimentConfig."""

    KIND = "removal"
    LISTS = ("fractions", "orders", "score", "budget")

    fractions: str = setting(
        "0.1,0.3,0.5,0.7,0.9",
        "Fractions of the training set to remove, comma-separated, each in (0, 1) (or 30%); "
        "the full data is always trained too, as the reference.",
    )
    orders: str = setting(
        ",".join(REMOVAL_ORDERS),
        "Which examples to remove, comma-separated: " + ", ".join(REMOVAL_ORDERS) + ".",
    )

    def fraction_list(self) -> list[float]:
        """The fractions to remove, ascending, without duplicates (0, the reference, dropped)."""
        why = " (removing everything leaves nothing to train on)"
        out = fraction_items("fractions", self.fractions, zero_ok=True, why=why)
        if not out:
            raise ConfigError(
                "`fractions` holds no fraction above 0: give what to remove, e.g. 0.1,0.3,0.5"
            )
        return out

    def order_list(self) -> list[str]:
        return [o for o in REMOVAL_ORDERS if o in self._choices("orders", REMOVAL_ORDERS)]

    def validate(self) -> None:
        super().validate()
        # the lists in one spelling ("0.3,0.5"), however they were given
        self.fractions = ",".join(f"{f:g}" for f in self.fraction_list())
        self.orders = ",".join(self.order_list())


@dataclass
class CompressionConfig(ExperimentConfig):
    """The compression experiment: which fractions to keep, by which selection strategies, ranked
    by which scores (of the statistics files, counted over which windows, or external arrays),
    on top of ExperimentConfig."""

    KIND = "compression"
    LISTS = ("keep", "strategies", "score", "budget", "window")

    window: str | None = setting(
        None,
        "Early epochs of the statistics files the scores count, comma-separated (e.g. 1,all: "
        "each a ranking of its own, with its own scoring cost; forgetting and margin have no "
        "window and are ranked once, over every recorded epoch; default: all).",
        type=str,
    )
    keep: str = setting(
        "0.3,0.5,0.7",
        "Fractions of the training set to keep, comma-separated, each in (0, 1) (or 70%); the "
        "full data is always trained too, as the reference.",
    )
    strategies: str = setting(
        ",".join(COMPRESSION_STRATEGIES),
        "Selection strategies, comma-separated: hardest (drop the easiest: the paper's "
        "compression), easiest, random, stratified (coverage-centric: equal-width score bins); "
        "and the dynamic ones, the full data pruned during training by a rule of --prune "
        "(prune-easiness, prune-loss, prune-random; epochs budget only).",
    )
    cut_hardest: float = setting(
        0.0,
        "The hardest and stratified strategies first drop this fraction of the very hardest "
        "examples (likely mislabelled), as coverage-centric selection does.",
        min=0,
        max=1,
        max_open=True,
    )
    external: tuple[str, ...] = setting(
        (),
        "An external score array as NAME=FILE (.npy, float [N] in dataset order, or .npz with "
        "`scores` and optionally `labels`, checked): higher = easier, like easiness and "
        "C-scores; NAME:harder=FILE for higher = harder. Repeatable.",
        multiple=True,
    )

    def keep_list(self) -> list[float]:
        return fraction_items("keep", self.keep)

    def strategy_list(self) -> list[str]:
        """The static strategies asked for, in COMPRESSION_STRATEGIES' order."""
        allowed = COMPRESSION_STRATEGIES + DYNAMIC_STRATEGIES
        return [s for s in COMPRESSION_STRATEGIES if s in self._choices("strategies", allowed)]

    def dynamic_list(self) -> list[str]:
        """The dynamic strategies asked for (pruning during training), in their order."""
        allowed = COMPRESSION_STRATEGIES + DYNAMIC_STRATEGIES
        return [s for s in DYNAMIC_STRATEGIES if s in self._choices("strategies", allowed)]

    def prunes_itself(self) -> bool:
        return bool(self.dynamic_list())

    def window_list(self) -> list[int | None]:
        """The windows (None: all recorded epochs), in the given order, without duplicates."""
        if self.window is None or str(self.window).strip().lower() in ("", "all", "none"):
            return [None]
        out: list[int | None] = []
        for item in _comma_list("window", str(self.window)):
            if item.lower() == "all":
                value = None
            else:
                try:
                    value = int(item)
                except ValueError:
                    raise ConfigError(
                        f"`window` must be epoch counts such as 1,2 (or all), got {item!r}"
                    ) from None
                if value < 1:
                    raise ConfigError(f"`window` must count at least 1 epoch, got {value}")
            if value not in out:
                out.append(value)
        return out

    def external_items(self) -> list[tuple[str, str, str]]:
        """(name, direction, path) of every --external NAME[:harder]=FILE."""
        out, seen = [], set()
        for item in self.external:
            name, sep, path = str(item).partition("=")
            name, _, how = name.strip().partition(":")
            if not sep or not name or not path.strip():
                raise ConfigError(f"`external` takes NAME=FILE (or NAME:harder=FILE), got {item!r}")
            if how not in ("", "easier", "harder"):
                raise ConfigError(
                    f"`external` {item!r}: after the name comes :easier or :harder "
                    f"(which way the array points), not :{how}"
                )
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ConfigError(f"`external` name {name!r}: use letters, digits, _ . -")
            if name in seen or name in RANKING_SCORES:
                raise ConfigError(
                    f"`external` name {name!r} is taken: give every external score "
                    "a name of its own, not a built-in score's"
                )
            seen.add(name)
            out.append(
                (name, "higher_harder" if how == "harder" else "higher_easier", path.strip())
            )
        return out

    def validate(self) -> None:
        super().validate()
        self.window_list()
        self.external_items()
        self.keep = ",".join(f"{f:g}" for f in self.keep_list())
        dynamic = self.dynamic_list()
        if dynamic and self.prune != "none":
            raise ConfigError(
                f"the strategy {dynamic[0]} prunes the full data during training itself: leave "
                f"`prune` at none (it would prune every training of the experiment)"
            )
        if dynamic and "epochs" not in self.budget_list():
            raise ConfigError(
                f"the strategy {dynamic[0]} prunes during training, which runs on an epoch "
                "budget: add epochs to `budget` (--budget epochs,steps trains it under epochs)"
            )
        self.strategies = ",".join(self.strategy_list() + dynamic)
        windows = self.window_list()
        self.window = (
            None if windows == [None] else ",".join("all" if w is None else str(w) for w in windows)
        )


# ---------------------------------------------------------------------------- benchmarks
@dataclass
class BenchLoaderConfig(DataConfig):
    """`easyhard bench loader` (easyhard.bench): which data, batch, threads and how long."""

    dataset: str = setting(
        "synthetic",
        "The dataset (its training split); synthetic isolates the model.",
        choices=DATASETS,
    )
    batch_size: int = setting(256, "Examples per batch.", min=1)
    steps: int = setting(50, "Timed steps (batches) per setting.", min=1)
    warmup: int = setting(
        10, "Untimed steps first (bench train: the first one compiles with --compile).", min=1
    )
    device: str = device_field()
    crop: int = crop_field()
    workers: int = workers_field()
    skip_corrupt: bool = skip_corrupt_field(
        "Image folders: drop unreadable images (logged) instead of stopping with an error "
        "naming the file."
    )


@dataclass
class BenchTrainConfig(BenchLoaderConfig):
    """`easyhard bench train`: the training step of a scoring run, with and without recording."""

    arch: str = setting("convnet", "Architecture (see `easyhard models`).")
    amp: str = amp_field()
    channels_last: bool = setting(True, "Channels-last memory format (what `easyhard score` uses).")
    compile: bool = setting(False, "torch.compile the model (its first step is reported apart).")
    blocks: int = setting(
        5,
        "Alternating blocks per setting (recording, plain, ...): drift falls on both alike.",
        min=1,
    )

    def validate(self) -> None:
        super().validate()
        check_archs((self.arch,), "arch")
        if self.steps < self.blocks:
            raise ConfigError(
                f"`steps` ({self.steps}) must be at least `blocks` "
                f"({self.blocks}): each block times at least one step"
            )
