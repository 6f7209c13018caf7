"""easyhard inside anyone's training loop: the index wrapper, easyhard's datasets as torch
datasets, scores as a table, selection by name, combining in memory, the public names, and the
README's own-loop script (run, and counted again from a forward hook)."""

from __future__ import annotations

import gzip
import os
import re
import runpy
import shutil
import warnings

import numpy as np
import pytest
import torch
from helpers import cli, score_job
from PIL import Image

import easyhard
from easyhard.datasets import ArrayDataset, CorruptImageError, load_dataset
from easyhard.scores import DIRECTION, SCORES, compute_scores, hardness, merge_stats_files
from easyhard.select import select

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def tiny(n=60, classes=3, size=6, **kw):
    return load_dataset("synthetic", num_samples=n, num_classes=classes, image_size=size, **kw)


def image_folder(root, per_class=3, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(root / c)
        for i in range(per_class):
            size = (8 + i, 9)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return root


def record(data, epochs=2, batch=16, seed=0, stats=None, model=None):
    """Train a linear model on `data` (an IndexedDataset of CHW uint8 images) and record it."""
    torch.manual_seed(seed)
    x0 = data[0][0]
    model = model or torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x0.numel(), 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = stats or easyhard.SampleStats.for_dataset(data)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True)
    for _ in range(epochs):
        for images, labels, indices in loader:
            logits = model(images.float() / 255)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            stats.update(logits, labels, indices)
        stats.end_epoch()
    return stats


# ---------------------------------------------------------------------------- datasets
def test_easyhard_datasets_are_map_style_torch_datasets():
    ds = tiny()
    image, label = ds[5]
    assert image.dtype == torch.uint8 and image.shape == (3, 6, 6)
    assert torch.equal(image, torch.from_numpy(ds.images[5]).permute(2, 0, 1))
    assert label == int(ds.labels[5]) and isinstance(label, int)
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    with pytest.raises(TypeError, match="one integer"):
        ds[True]
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=7)))
    assert images.shape == (7, 3, 6, 6) and labels.tolist() == ds.labels[:7].tolist()
    assert len(torch.utils.data.Subset(ds, [1, 2])) == 2
    assert len(list(ds)) == len(ds)


def test_a_transform_gets_the_pil_image_and_changes_nothing_else():
    seen = []

    def transform(im):
        seen.append(im)
        return "made"

    base = tiny(size=5)
    ds = load_dataset(
        "synthetic", num_samples=60, num_classes=3, image_size=5, transform=transform,
        target_transform=lambda y: y + 10,
    )  # fmt: skip
    assert ds[3] == ("made", int(base.labels[3]) + 10)
    assert isinstance(seen[0], Image.Image) and seen[0].size == (5, 5)
    np.testing.assert_array_equal(np.asarray(seen[0]), base.images[3])
    assert ds.fingerprint == base.fingerprint and base.transform is None  # a view, same data
    gray = ArrayDataset(
        "g", "train", np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), ["a", "b"]
    )
    assert gray.with_transform(lambda im: im.mode)[0] == ("L", 0)
    assert gray[0][0].shape == (1, 4, 4)


def test_image_folder_items_and_a_corrupt_file_named(tmp_path):
    root = image_folder(tmp_path / "imgs")
    ds = load_dataset("imagefolder", str(root))
    image, label = ds[4]  # dog/1.png: 9 x 9... (h, w) = (9, 9)
    assert image.shape == (3, 9, 9) and label == 1
    with Image.open(root / "dog" / "1.png") as im:
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(im.convert("RGB")))
    (root / "dog" / "2.png").write_bytes(b"not an image")
    ds = load_dataset("imagefolder", str(root))
    with pytest.raises(CorruptImageError, match=r"dog/2\.png"):
        ds[5]


# ---------------------------------------------------------------------------- with_indices
def test_with_indices_adds_the_index_to_any_item_shape():
    ds = tiny()
    data = easyhard.with_indices(ds)
    image, label, index = data[7]
    assert index == 7 and label == int(ds.labels[7]) and len(data) == len(ds)
    assert data.fingerprint == ds.fingerprint and data.num_classes == 3
    np.testing.assert_array_equal(data.labels, ds.labels)

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"x": i * 2, "label": 0}

    assert easyhard.with_indices(Dicts())[2] == {"x": 4, "label": 0, "index": 2}
    assert easyhard.with_indices(Dicts(), key="idx")[1]["idx"] == 1
    with pytest.raises(ValueError, match="already have a 'x' key"):
        easyhard.with_indices(Dicts(), key="x")[0]
    assert easyhard.with_indices([10, 20, 30])[1] == (20, 1)  # a plain item: (item, index)
    with pytest.raises(ValueError, match="already carries"):
        easyhard.with_indices(data)
    with pytest.raises(TypeError, match="map-style"):
        easyhard.with_indices(iter([1, 2]))

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match="IterableDataset"):
        easyhard.with_indices(Stream())
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=5, shuffle=False)))
    assert batch[2].dtype == torch.int64 and batch[2].tolist() == [0, 1, 2, 3, 4]


def test_a_dataset_that_changes_size_after_with_indices_is_refused():
    """Its fingerprint, labels and indices were taken when wrapped: a grown dataset failed deep
    in the DataLoader with an IndexError, a shrunk one recorded other data under the old
    fingerprint (found by a careless-user helper)."""

    class Growing(torch.utils.data.Dataset):
        def __init__(self):
            self.items = list(range(20))

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i], 0

    base = Growing()
    data = easyhard.with_indices(base, fingerprint="v1")
    assert len(data) == 20 and data[19] == (19, 0, 19)
    base.items += [20, 21]
    with pytest.raises(ValueError, match="has 22 items, but had 20 when with_indices wrapped"):
        len(data)
    with pytest.raises(ValueError, match="wrap it again"):
        data[0]
    assert len(easyhard.with_indices(base, fingerprint="v2")) == 22


def test_a_subset_is_indexed_by_position_or_mapped_back_to_the_base():
    ds = tiny()
    inner = torch.utils.data.Subset(ds, list(range(10, 40)))
    nested = torch.utils.data.Subset(inner, [5, 0, 29])  # base 15, 10, 39
    by_position = easyhard.with_indices(nested)
    assert [by_position[i][2] for i in range(3)] == [0, 1, 2]
    assert by_position.num_samples == 3
    np.testing.assert_array_equal(by_position.labels, ds.labels[[15, 10, 39]])
    assert by_position.fingerprint not in (None, ds.fingerprint)  # its own numbering, its own print
    base = easyhard.with_indices(nested, base_indices=True)
    assert [base[i][2] for i in range(3)] == [15, 10, 39]
    assert base.num_samples == len(ds) and base.fingerprint == ds.fingerprint
    np.testing.assert_array_equal(base.labels, ds.labels)
    stats = record(base, epochs=1, batch=3)  # the others stay, never presented
    t = stats.totals()
    assert t["presentations"][[15, 10, 39]].tolist() == [1, 1, 1]
    assert t["presentations"].sum() == 3
    with pytest.raises(ValueError, match="outside the 30 examples"):
        easyhard.with_indices(torch.utils.data.Subset(inner, [30]))


def test_fingerprints_of_torchvision_datasets_match_easyhards(tmp_path):
    """The same data read by torchvision has easyhard's fingerprint: scores recorded from a
    torchvision loop are accepted by `easyhard compress --dataset ...`."""
    import torchvision

    root = image_folder(tmp_path / "imgs")
    theirs = easyhard.with_indices(torchvision.datasets.ImageFolder(str(root)))
    ours = load_dataset("imagefolder", str(root))
    assert theirs.fingerprint == ours.fingerprint
    assert theirs.paths == ours.paths and theirs.num_classes == 2

    class LikeMNIST(torch.utils.data.Dataset):  # .data [N, H, W] uint8, .targets, .classes
        def __init__(self, images, labels):
            self.data, self.targets = torch.from_numpy(images), torch.from_numpy(labels)
            self.classes = ["a", "b", "c"]

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            return self.data[i], int(self.targets[i])

    gray = tiny(channels=1)
    like = easyhard.with_indices(LikeMNIST(gray.images[..., 0], gray.labels))
    assert like.fingerprint == gray.fingerprint
    assert easyhard.with_indices([1, 2]).fingerprint is None
    assert easyhard.with_indices([1, 2], fingerprint="mine").fingerprint == "mine"
    with pytest.raises(ValueError, match="non-empty string"):
        easyhard.with_indices([1, 2], fingerprint="")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(f"{FMNIST}/train-images-idx3-ubyte.gz"), reason="no data")
def test_torchvisions_fashion_mnist_has_easyhards_fingerprint(tmp_path):
    import torchvision

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        with gzip.open(f"{FMNIST}/{stem}.gz") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(f"{FMNIST}/{stem}.gz", raw / f"{stem}.gz")
        with gzip.open(f"{FMNIST}/{stem}.gz") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tv = torchvision.datasets.FashionMNIST(str(tmp_path), train=True, download=False)
    assert easyhard.with_indices(tv).fingerprint == load_dataset("fashion-mnist").fingerprint


# ---------------------------------------------------------------------------- the recorder
def test_for_dataset_checks_labels_and_needs_classes():
    ds = tiny()
    data = easyhard.with_indices(ds)
    stats = easyhard.SampleStats.for_dataset(data)
    assert (stats.num_samples, stats.num_classes, stats.fingerprint) == (60, 3, ds.fingerprint)
    wrong = torch.tensor([(int(ds.labels[0]) + 1) % 3])
    with pytest.raises(ValueError, match="do not match the dataset's"):
        stats.update(torch.zeros(1, 3), wrong, torch.tensor([0]))
    shifted = easyhard.with_indices(ds.with_transform(target_transform=lambda y: (y + 1) % 3))
    free = easyhard.SampleStats.for_dataset(shifted)  # the loader's labels are not the dataset's
    free.update(torch.zeros(1, 3), wrong, torch.tensor([0]))
    with pytest.raises(ValueError, match="pass num_classes="):
        easyhard.SampleStats.for_dataset(easyhard.with_indices([(0, 1)]))
    assert easyhard.SampleStats.for_dataset(
        easyhard.with_indices([(0, 1)]), num_classes=2
    ).num_samples == 1  # fmt: skip
    with pytest.raises(TypeError, match="with_indices"):
        easyhard.SampleStats.for_dataset(ds)
    with pytest.raises(ValueError, match="outside num_classes=2"):
        easyhard.SampleStats.for_dataset(data, num_classes=2)


# ---------------------------------------------------------------------------- scores as a table
def test_scores_table_live_from_a_file_and_merged(tmp_path):
    ds = tiny()
    data = easyhard.with_indices(ds)
    stats = record(data, epochs=3)
    table = stats.scores()
    expect = compute_scores(stats)
    assert list(table)[:2] == ["index", "label"] and "path" not in table
    for name in expect:
        np.testing.assert_array_equal(table[name], expect[name], err_msg=name)
    np.testing.assert_array_equal(table["index"], np.arange(60))
    assert table.fingerprint == ds.fingerprint and table.num_classes == 3 and table.runs == 1
    np.testing.assert_array_equal(
        stats.scores(window=1)["easiness"], compute_scores(stats, 1)["easiness"]
    )
    stats.save(tmp_path / "s.npz")
    read = easyhard.read_scores(tmp_path / "s.npz")
    for name in table:
        np.testing.assert_array_equal(read[name], table[name], err_msg=name)
    df = table.to_pandas()
    assert df.index.name == "index" and len(df) == 60
    assert list(df.columns) == [k for k in table if k != "index"]
    assert df.loc[17, "easiness"] == table["easiness"][17]
    other = record(data, epochs=3, seed=1)
    other.save(tmp_path / "t.npz")
    merged_file = merge_stats_files(
        [str(tmp_path / "s.npz"), str(tmp_path / "t.npz")], str(tmp_path / "m.npz")
    )
    merged = easyhard.merge_scores([stats, tmp_path / "t.npz"])  # in memory, a file too
    from_file = easyhard.read_scores(tmp_path / "m.npz")
    assert merged.runs == from_file.runs == 2 and merged.per_run["easiness"].shape == (2, 60)
    for name in merged_file.scores:
        np.testing.assert_array_equal(merged[name], merged_file.scores[name], err_msg=name)
        np.testing.assert_array_equal(from_file[name], merged_file.scores[name], err_msg=name)
    with pytest.raises(ValueError, match="given twice"):
        easyhard.merge_scores([stats, stats])
    with pytest.raises(ValueError, match="cannot be merged"):
        easyhard.merge_scores([stats, record(easyhard.with_indices(tiny(seed=4)), epochs=3)])
    with pytest.raises(ValueError, match="set `window`"):
        easyhard.merge_scores([stats, record(data, epochs=2)])
    windowed = easyhard.merge_scores([stats, record(data, epochs=2)], window=2)
    assert windowed.window == 2
    # forgetting and margin have no window: a windowed merge leaves them out (it averaged each
    # run's all-epoch values, 3 and 2 epochs, under the window's label; found by a careless-user
    # helper)
    assert "forgetting" not in windowed and "margin" not in windowed and "el2n" in windowed


def test_every_score_documents_its_direction_and_range():
    doc = easyhard.Scores.__doc__
    for name in SCORES:
        m = re.search(rf"^\s*- {name} \((\w+), ([^)]*)\)", doc, re.M)
        assert m, f"{name} is not documented in Scores"
        assert m.group(1) == DIRECTION[name], name
    for column in ("index", "label", "path", "never_learned", "never_presented"):
        assert re.search(rf"^\s*- {column}\b", doc, re.M), column


# ---------------------------------------------------------------------------- selection by name
def test_select_subset_orients_by_the_score_and_takes_the_clis_defaults(tmp_path):
    data = easyhard.with_indices(tiny(n=90))
    stats = record(data, epochs=2)
    scores = stats.scores()
    hard = easyhard.select_subset(scores, "easiness", keep=0.2, strategy="hardest", balanced=False)
    easiest_first = np.argsort(scores["easiness"], kind="stable")
    assert set(hard.indices) == set(easiest_first[:18].tolist())  # the least easy
    # the old select, given raw easiness, keeps the easiest: select_subset cannot
    old = select(scores["easiness"], scores["label"], 3, 0.2, strategy="hardest")
    assert set(old.indices) == set(easiest_first[-18:].tolist())
    el2n = easyhard.select_subset(scores, "el2n", keep=0.2, strategy="hardest", balanced=False)
    assert set(el2n.indices) == set(np.argsort(-scores["el2n"], kind="stable")[:18].tolist())
    from easyhard.config import SelectConfig

    default = easyhard.select_subset(stats, keep=0.5)
    cfg = SelectConfig(keep="0.5")
    assert (default.info["strategy"], default.info["balanced"]) == (cfg.strategy, cfg.balanced)
    assert (default.info["score"], default.info["bins"]) == (cfg.score, cfg.bins)
    stats.save(tmp_path / "s.npz")
    r = cli(["select", tmp_path / "s.npz", "--keep", "0.5", "--out", tmp_path / "sel"])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "sel" / "indices.npy"), default.indices)
    np.testing.assert_array_equal(
        easyhard.select_subset(tmp_path / "s.npz", keep=0.5).indices, default.indices
    )
    subset = default.subset(data.dataset)
    assert (
        isinstance(subset, torch.utils.data.Subset)
        and list(subset.indices) == default.indices.tolist()
    )


def test_select_subset_says_what_the_cli_says():
    scores = record(easyhard.with_indices(tiny()), epochs=1).scores()
    for settings, message in [
        ({"keep": 1}, "ambiguous"),
        ({"keep": "+5"}, "ambiguous"),
        ({"keep": 0.5, "strategy": "best"}, "`strategy` must be one of"),
        ({"keep": 0.5, "score": "variability"}, "`score` must be one of"),
        ({"keep": 0.5, "cut_hardest": 1.0}, "`cut_hardest` must be below 1"),
        ({"keep": 0.5, "balanced": "yes"}, "`balanced` must be bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            easyhard.select_subset(scores, **settings)
    with pytest.raises(TypeError, match="unknown setting 'strategi'"):
        easyhard.select_subset(scores, keep=0.5, strategi="hardest")
    with pytest.raises(TypeError, match="Scores table"):
        easyhard.select_subset(np.zeros(60), keep=0.5)
    with pytest.raises(ValueError, match="count every epoch in easiness, not window=1; a window"):
        easyhard.select_subset(scores, keep=0.5, window=1)


def test_never_presented_examples_are_left_out_and_counted():
    ds = tiny()
    stats = easyhard.SampleStats(len(ds), 3, fingerprint=ds.fingerprint)  # no labels: -1 unseen
    seen = torch.arange(40)
    stats.update(torch.randn(40, 3), torch.from_numpy(ds.labels[:40]), seen)
    stats.end_epoch()
    scores = stats.scores()
    assert (scores["label"][40:] == -1).all() and scores["never_presented"][40:].all()
    with pytest.warns(UserWarning, match=r"20 example\(s\) never presented"):
        sel = easyhard.select_subset(scores, keep=0.5)
    assert len(sel.indices) == 20 and (sel.indices < 40).all()
    with pytest.raises(
        ValueError, match="label -1 .*never presented to a SampleStats made without labels="
    ):
        select(hardness("easiness", scores["easiness"]), scores["label"], 3, 0.5)
    with pytest.raises(ValueError, match="indexes a dataset of 60 examples, this one has 10"):
        sel.subset(tiny(n=10))
    with pytest.raises(ValueError, match="belongs to other data"):
        sel.subset(tiny(seed=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        easyhard.select_subset(record(easyhard.with_indices(ds), epochs=1), keep=0.5)  # no warning


# ---------------------------------------------------------------------------- combining
def test_shards_combine_to_the_run_recorded_whole():
    """Two recorders each given half of every batch (a fixed partition by index, as separate
    processes would record) combine to exactly the recorder that saw every row."""
    ds = tiny(n=64)
    data = easyhard.with_indices(ds)
    whole = easyhard.SampleStats.for_dataset(data)
    shards = [easyhard.SampleStats.for_dataset(data) for _ in range(2)]
    g = torch.Generator().manual_seed(0)
    labels = torch.from_numpy(ds.labels)
    for epoch in range(3):
        for _ in range(4):
            idx = torch.randperm(64, generator=g)[:40]
            logits = torch.randn(40, 3, generator=g)
            whole.update(logits, labels[idx], idx)
            for k, shard in enumerate(shards):
                mine = idx % 2 == k
                shard.update(logits[mine], labels[idx[mine]], idx[mine])
        if epoch < 2:  # the last epoch stays open
            whole.end_epoch()
            for shard in shards:
                shard.end_epoch()
    combined = easyhard.SampleStats.combine(shards)
    a, b = combined.totals(), whole.totals()
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(combined.history, whole.history)
    np.testing.assert_array_equal(combined.state_dict()["counts"], whole.state_dict()["counts"])
    for k in ("el2n", "easiness", "forgetting"):
        np.testing.assert_array_equal(combined.scores()[k], whole.scores()[k], err_msg=k)
    with pytest.raises(ValueError, match="given twice"):
        easyhard.SampleStats.combine([shards[0], shards[0]])
    with pytest.raises(ValueError, match="only shards of one run combine"):
        easyhard.SampleStats.combine([shards[0], easyhard.SampleStats(64, 3)])


def test_shards_that_saw_one_example_in_the_same_epoch_average_its_record():
    a, b = easyhard.SampleStats(2, 2), easyhard.SampleStats(2, 2)
    a.update(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), torch.tensor([0]))  # correct
    b.update(torch.tensor([[0.0, 3.0], [0.0, 3.0]]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    a.end_epoch(), b.end_epoch()
    c = easyhard.SampleStats.combine([a, b])
    rec = c.history[0, 0]
    assert (rec["presentations"], rec["correct"]) == (3, 1)
    expect = (a.history[0, 0]["prob"] * 1 + b.history[0, 0]["prob"] * 2) / 3
    assert rec["prob"] == pytest.approx(expect, rel=1e-6)
    assert not c.totals()["last_correct"][0]  # b's batch was its latest observation too: wrong
    with pytest.raises(ValueError, match="not shards of the same data"):
        x, y = easyhard.SampleStats(2, 2), easyhard.SampleStats(2, 2)
        x.update(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([1]))
        y.update(torch.zeros(1, 2), torch.tensor([1]), torch.tensor([1]))
        easyhard.SampleStats.combine([x, y])


# ---------------------------------------------------------------------------- the public names
def test_every_public_name_resolves_and_is_listed_in_the_docstring():
    for name in easyhard.__all__:
        assert getattr(easyhard, name) is not None
        if name != "__version__":
            assert re.search(rf"^\s{{4}}{name}\b", easyhard.__doc__, re.M), name
    import easyhard.select as select_module

    assert callable(easyhard.select_subset) and select_module.select is select
    with pytest.raises(AttributeError):
        easyhard.no_such_name  # noqa: B018
    changelog = open(os.path.join(ROOT, "CHANGELOG.md")).read()
    assert f"## {easyhard.__version__}" in changelog and "select_subset" in changelog


# ---------------------------------------------------------------------------- the README script
def readme_script() -> str:
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## Use it in your own training loop") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_shows_examples_own_loop_with_six_marked_lines():
    script = open(os.path.join(ROOT, "examples", "own_loop.py")).read()
    body = script[script.index('"""', 3) + 3 :].lstrip("\n")
    assert readme_script() == body
    marked = [line for line in body.splitlines() if "# easyhard" in line]
    assert len(marked) == 6, marked


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(f"{FMNIST}/train-images-idx3-ubyte.gz"), reason="no data")
def test_the_readme_script_runs_and_its_counts_equal_a_count_from_a_forward_hook(
    tmp_path, monkeypatch
):
    """The README's script, run as it stands; a forward hook on the model captures the training
    batches' logits, a wrapper on the DataLoader the labels and indices they came with; counted
    again in numpy (presentations, correct, forgetting events), exactly what the script saved."""
    captured, batches = [], []

    def hook(module, args, output):
        if module.training and isinstance(module, torch.nn.Sequential):
            captured.append((module, output.detach().clone()))

    loader_iter = torch.utils.data.DataLoader.__iter__

    def spy(self):
        for batch in loader_iter(self):
            batches.append((batch[1].clone(), batch[2].clone()))
            yield batch

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", spy)
    monkeypatch.chdir(tmp_path)
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        ns = runpy.run_path(os.path.join(ROOT, "examples", "own_loop.py"), run_name="__main__")
    finally:
        handle.remove()
    logits = [out for module, out in captured if module is ns["model"]]
    assert len(logits) == len(batches) == 2 * len(ns["loader"])
    labels = torch.cat([b[0] for b in batches]).numpy()
    indices = torch.cat([b[1] for b in batches]).numpy()
    correct = torch.cat(logits).argmax(1).numpy() == labels
    np.testing.assert_array_equal(labels, ns["train_set"].labels[indices])
    order = np.argsort(indices, kind="stable")  # per example, in presentation order
    idx, ok = indices[order], correct[order]
    forgot = (idx[1:] == idx[:-1]) & ok[:-1] & ~ok[1:]
    N = len(ns["train_set"])
    saved = easyhard.SampleStats.load(tmp_path / "scores.npz")
    t = saved.totals()
    np.testing.assert_array_equal(t["presentations"], np.bincount(indices, minlength=N))
    np.testing.assert_array_equal(t["correct"], np.bincount(indices, weights=correct, minlength=N))
    np.testing.assert_array_equal(
        t["forgetting_events"], np.bincount(idx[1:], weights=forgot, minlength=N)
    )
    assert saved.fingerprint == load_dataset("fashion-mnist").fingerprint
    assert len(ns["subset"]) == 42000


def test_a_score_folder_reads_as_a_scores_table(tmp_path):
    out = score_job(tmp_path / "job", 48, 3, epochs=2)
    table = easyhard.read_scores(os.path.join(out, "convnet-run0", "scores.npz"), window=1)
    assert table.window == 1 and len(table["index"]) == 48
    merged = easyhard.read_scores(os.path.join(out, "merged.npz"))
    assert merged.runs == 1
