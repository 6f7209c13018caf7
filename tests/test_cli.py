"""The front end (issue 9): options generated from the configuration dataclasses, --config TOML
files, checks before any output exists, and errors that are one sentence, never a traceback."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import cli as run
from helpers import synthetic, tiny_config
from test_compress import score_file
from test_datasets import make_fmnist, make_folder, write_cifar10

from easyhard.cli import main
from easyhard.cli._base import NON_CONFIG_OPTIONS, cli_wording
from easyhard.config import (
    CompressConfig,
    ConfigError,
    ScoreConfig,
    SelectConfig,
    from_mapping,
    load_toml_file,
    to_toml,
)
from easyhard.datasets import load_dataset

COMMANDS = {"score": ScoreConfig, "select": SelectConfig, "compress": CompressConfig}
SMALL = synthetic(120, 3, batch=64, arch="convnet", epochs=1, device="cpu", quiet=True)


def cli(*args, cwd=None):
    """`python -m easyhard ARGS` in a fresh process: (exit code, stdout + stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "easyhard", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    return p.returncode, p.stdout + p.stderr


def assert_one_sentence(code, out, *needles):
    assert code == 1, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], (needle, out)


# ---------------------------------------------------------------------------- generated options
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_options_are_generated_from_the_config(name):
    cls = COMMANDS[name]
    command = main.commands[name]
    params = {p.name: p for p in command.params if isinstance(p, __import__("click").Option)}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for fname, f in fields.items():  # every field has its option, spelled and documented by it
        assert fname in params, fname
        opt = params[fname]
        assert opt.help == f.metadata["help"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert opt.default == default or (opt.multiple and tuple(opt.default) == default), fname
        if f.metadata.get("choices"):
            assert tuple(opt.type.choices) == f.metadata["choices"], fname
        if f.metadata.get("flag"):
            assert f.metadata["flag"].split("/")[0] in opt.opts, fname
    for pname, opt in params.items():  # every option is a field or a documented non-config one
        if pname in fields or opt.opts[0] in ("--help", "-h"):
            continue
        assert opt.opts[0] in NON_CONFIG_OPTIONS, f"{name}: {opt.opts[0]} is undocumented"


def test_choices_come_from_their_owners():
    from easyhard.compress import LINK_MODES
    from easyhard.datasets import DATASETS
    from easyhard.select import STRATEGIES

    fields = {f.name: f for f in dataclasses.fields(CompressConfig)}
    assert fields["dataset"].metadata["choices"] == DATASETS
    assert fields["strategy"].metadata["choices"] == STRATEGIES
    assert fields["link"].metadata["choices"] == LINK_MODES


def test_help_does_not_import_torch():
    """`easyhard --help` answers at once: nothing on its path imports torch."""
    code = (
        "import sys; from click.testing import CliRunner; from easyhard.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); "
        "[CliRunner().invoke(main, [c, '--help']) for c in main.commands]; "
        "assert r.exit_code == 0; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["score", "merge", "select", "compress", "info", "models"])
def test_every_command_help_has_an_example(name):
    r = run([name, "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and f"easyhard {name}" in r.output


# ---------------------------------------------------------------------------- --config
def test_config_file_supplies_settings_and_flags_override(tmp_path):
    (tmp_path / "c.toml").write_text(
        'dataset = "synthetic"\nnum_samples = 120\nnum_classes = 3\nimage_size = 8\n'
        'batch_size = 64\narchs = ["convnet"]\nepochs = 2\ndevice = "cpu"\n'
    )
    r = run(
        [
            "score",
            "--config",
            tmp_path / "c.toml",
            "--epochs",
            "1",
            "--quiet",
            "--json",
            "--out",
            tmp_path / "o",
        ]
    )
    assert r.exit_code == 0, r.output
    written = load_toml_file(str(tmp_path / "o" / "score-config.toml"))
    assert (
        written["epochs"] == 1 and written["archs"] == ["convnet"] and written["batch_size"] == 64
    )
    cfg = json.loads((tmp_path / "o" / "convnet-run0" / "config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["num_samples"] == 120
    # the written file reproduces the job
    assert from_mapping(ScoreConfig, written) == tiny_config(120, 3, 8, 64, epochs=1)


def test_config_file_errors_name_the_key(tmp_path):
    (tmp_path / "bad.toml").write_text("epochs = 1\nbatchsize = 3\n")
    code, out = cli("score", "--config", tmp_path / "bad.toml", "--out", tmp_path / "o")
    assert_one_sentence(code, out, "batchsize", "bad.toml")
    (tmp_path / "typed.toml").write_text('epochs = "many"\n')
    code, out = cli("score", "--config", tmp_path / "typed.toml", "--out", tmp_path / "o")
    assert_one_sentence(code, out, 'epochs = "many" is not an integer', "typed.toml")
    # out of range or not a choice: the file's key, not a flag the user never typed
    for text, key in [("epochs = 0", "epochs"), ('amp = "maybe"', "amp")]:
        (tmp_path / "range.toml").write_text(text + "\n")
        code, out = cli("score", "--config", tmp_path / "range.toml", "--out", tmp_path / "o")
        assert code == 1 and f"'{key}' in" in out and "range.toml" in out, out
        assert f"--{key}" not in out and "Traceback" not in out
    # a flag's own bad value is still the flag's
    (tmp_path / "good.toml").write_text("epochs = 3\n")
    code, out = cli("score", "--config", tmp_path / "good.toml", "--epochs", "0", "--out", "o")
    assert code == 1 and "'--epochs'" in out and "good.toml" not in out, out
    (tmp_path / "broken.toml").write_text("epochs = \n")
    code, out = cli("score", "--config", tmp_path / "broken.toml", "--out", tmp_path / "o")
    assert_one_sentence(code, out, "not valid TOML")
    assert not (tmp_path / "o").exists()


def test_config_file_values_of_the_wrong_type_are_refused_not_converted(tmp_path):
    """The command line would read epochs = 1.5 as 1 and compile = "yes" as true: refused,
    naming the key and the file. A number for a text setting (keep = 0.5) and one value for a
    list setting (archs = "convnet") are what the user meant."""
    toml = tmp_path / "c.toml"
    for text, says in [
        ("epochs = 1.5", "epochs = 1.5 is not an integer"),
        ("batch_size = true", "batch_size = true is not an integer"),
        ('compile = "yes"', 'compile = "yes" is not true or false'),
        ('lr = "0.1"', 'lr = "0.1" is not a number'),
        ('archs = ["convnet", true]', "archs = true is not a string (or a list of them)"),
    ]:
        toml.write_text(text + "\n")
        r = run(["score", "--config", toml, "--out", tmp_path / "o"])
        assert r.exit_code == 1 and says in r.output and "c.toml" in r.output, (text, r.output)
        assert not (tmp_path / "o").exists()
    toml.write_text('archs = "convnet"\nlr = 1\n')  # an integer is a number
    r = run(["score", *SMALL, "--config", toml, "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    written = load_toml_file(str(tmp_path / "o" / "score-config.toml"))
    assert written["archs"] == ["convnet"] and written["lr"] == 1.0
    toml.write_text("keep = 0.5\n")
    r = run(["select", tmp_path / "o" / "merged.npz", "--config", toml, "--out", tmp_path / "s"])
    assert r.exit_code == 0, r.output


def test_an_option_the_dataset_does_not_use_is_refused(tmp_path):
    """--data-dir with synthetic data, --num-samples with Fashion-MNIST: ignored before (a user
    took --num-samples for a subset and trained on all 60,000), refused now, naming the option."""
    out = tmp_path / "o"
    for args, says in [
        (["--dataset", "synthetic", "--data-dir", tmp_path], "--data-dir is not an option of "
         "synthetic data"),
        (["--dataset", "synthetic", "--file-list", tmp_path / "l.txt"], "--file-list is not"),
        (["--dataset", "fashion-mnist", "--num-samples", "200"], "--num-samples is an option of "
         "synthetic only, not of fashion-mnist"),
        (["--dataset", "imagefolder", "--data-dir", tmp_path, "--image-size", "8"],
         "--image-size is an option of synthetic only"),
        (["--dataset", "cifar10", "--data-dir", tmp_path, "--file-list", tmp_path / "l.txt"],
         "--file-list is an option of imagefolder only"),
    ]:  # fmt: skip
        r = run(["score", *args, "--out", out])
        assert r.exit_code == 1 and says in r.output, (args, r.output)
        assert not out.exists()
    r = run(["bench", "loader", "--dataset", "synthetic", "--data-dir", tmp_path])
    assert r.exit_code == 1 and "--data-dir is not an option" in r.output
    with pytest.raises(ValueError, match="`data_dir` is not an option of synthetic"):
        ScoreConfig(dataset="synthetic", data_dir=str(tmp_path)).validate()
    # in a --config file: refused when set to something, accepted at the default (records of
    # earlier versions list every option); the record no longer lists options the data ignores
    toml = tmp_path / "fm.toml"
    toml.write_text('dataset = "fashion-mnist"\nnum_samples = 1000\n')
    r = run(["score", "--config", toml, "--out", out])
    assert r.exit_code == 1 and "fm.toml: num_samples = 1000 is an option of synthetic only" in (
        r.output
    )
    toml.write_text(f'dataset = "imagefolder"\ndata_dir = "{tmp_path / "nowhere"}"\n'
                    "num_samples = 2048\nimage_size = 28\nsynthetic_seed = 0\n")  # fmt: skip
    r = run(["score", "--config", toml, "--out", out])
    assert r.exit_code == 1 and "nowhere" in r.output and "num_samples" not in r.output, r.output
    record = to_toml(ScoreConfig(dataset="fashion-mnist"))
    assert "num_samples" not in record and "image_size" not in record and "epochs" in record
    assert "num_samples = 2048" in to_toml(ScoreConfig(dataset="synthetic"))
    assert not out.exists()
    # the job's own record (every setting its dataset uses) still configures the job
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    (tmp_path / "copy.toml").write_bytes((out / "score-config.toml").read_bytes())
    r = run(["score", "--config", tmp_path / "copy.toml", "--out", out, "--resume"])
    assert r.exit_code == 0, r.output


def test_the_jobs_own_record_is_not_an_input(tmp_path):
    assert run(["score", *SMALL, "--out", tmp_path / "o"]).exit_code == 0
    r = run(
        [
            "score",
            "--config",
            tmp_path / "o" / "score-config.toml",
            "--resume",
            "--out",
            tmp_path / "o",
        ]
    )
    assert r.exit_code != 0 and "pass a copy" in r.output
    (tmp_path / "copy.toml").write_bytes((tmp_path / "o" / "score-config.toml").read_bytes())
    r = run(["score", "--config", tmp_path / "copy.toml", "--resume", "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output


def test_toml_round_trip_of_every_config():
    for cls in (ScoreConfig, CompressConfig):
        cfg = cls(keep="0.5") if cls is CompressConfig else cls(data_dir='we"ird\\path')
        import tomllib

        assert from_mapping(cls, tomllib.loads(to_toml(cfg, "a header"))) == cfg


def test_library_validation_matches_the_options():
    with pytest.raises(ConfigError, match="`label_smoothing` must be below 1"):
        ScoreConfig(label_smoothing=2.0).validate()
    with pytest.raises(ConfigError, match="`epochs` must be at least 1"):
        ScoreConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="`archs` must be a list|`batch_size` must be int"):
        ScoreConfig(batch_size=1.5).validate()


# ---------------------------------------------------------------------------- before any output
def test_everything_checkable_is_checked_before_an_output_exists(tmp_path):
    for extra, needle in [
        (["--window", "3", "--epochs", "2"], "--window (3) counts more epochs"),
        (["--device", "foo"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--device", "mps"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--device", "cuda"], "no CUDA device is available"),
        (["--arch", "alexnet"], "unknown architecture(s) alexnet"),
    ]:
        code, out = cli("score", *SMALL, *extra, "--out", tmp_path / "o")
        if extra == ["--device", "cuda"] and code == 0:
            continue  # a machine with a GPU
        assert_one_sentence(code, out, needle)
        assert not (tmp_path / "o").exists(), extra
    code, out = cli("score", *SMALL, "--label-smoothing", "2", "--out", tmp_path / "o")
    assert code == 1 and "--label-smoothing" in out and "Traceback" not in out
    assert not (tmp_path / "o").exists()


def test_a_failed_run_leaves_nothing_that_blocks_the_corrected_command(tmp_path):
    code, out = cli(
        "score", *SMALL, "--lr", "1e30", "--max-nonfinite-steps", "1", "--out", tmp_path / "o"
    )
    assert_one_sentence(code, out, "diverged", "--lr", "--max-nonfinite-steps, is 1")
    assert "fp16" not in out  # an fp32 run (CPU) is not told to leave fp16
    assert not (tmp_path / "o").exists()
    code, out = cli("score", *SMALL, "--out", tmp_path / "o")
    assert code == 0, out


# ---------------------------------------------------------------------------- errors
def test_wording_of_library_messages():
    assert cli_wording("pass `force=True` or give `data_dir`") == "pass --force or give --data-dir"
    assert (
        cli_wording("use `link='copy'`; `nesterov=False`; `archs`")
        == "use --link copy; --no-nesterov; --arch"
    )
    assert cli_wording("two\nlines") == "two lines"
    assert cli_wording("every `ps` value") == "every --p value"  # OverlapConfig's flag


def test_damaged_checkpoint_on_resume(tmp_path, killed_after_epoch):
    from easyhard.train import train_run

    cfg = tiny_config(120, 3, batch=64)
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path / "o"), quiet=True)
    (tmp_path / "o" / "convnet-run0" / "checkpoint.pt").write_bytes(b"garbage")
    code, out = cli("score", *SMALL, "--epochs", "2", "--resume", "--out", tmp_path / "o")
    assert_one_sentence(code, out, "checkpoint.pt cannot be read", "damaged")


def test_bad_dataset_files(tmp_path):
    make_fmnist(tmp_path / "fm", n=20)
    data = (tmp_path / "fm" / "train-images-idx3-ubyte.gz").read_bytes()
    base = [
        "score",
        "--dataset",
        "fashion-mnist",
        "--arch",
        "convnet",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
    ]
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    code, out = cli(*base, "--data-dir", tmp_path / "fm")
    assert_one_sentence(code, out, "train-images-idx3-ubyte.gz is a damaged gzip file")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    code, out = cli(*base, "--data-dir", tmp_path / "fm")
    assert_one_sentence(code, out, "train-images-idx3-ubyte.gz is a damaged gzip file")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x03\x00")
    )
    code, out = cli(*base, "--data-dir", tmp_path / "fm")
    assert_one_sentence(code, out, "truncated idx header")
    assert not (tmp_path / "o").exists()


def test_bad_cifar_label(tmp_path):
    import pickle

    write_cifar10(tmp_path / "c")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_2"
    d = pickle.loads(batch.read_bytes())
    d[b"labels"][1] = -1
    batch.write_bytes(pickle.dumps(d, protocol=2))
    code, out = cli(
        "score",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path / "c",
        "--arch",
        "convnet",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
    )
    assert_one_sentence(code, out, "data_batch_2", "labels in [0, 10)")


def test_file_list_that_is_not_utf8(tmp_path):
    make_folder(tmp_path / "img", per_class=2)
    (tmp_path / "list.txt").write_bytes(b"class0/000.jpg 0\nclass0/\xff\xfe.jpg 1\n")
    code, out = cli(
        "score",
        "--dataset",
        "imagefolder",
        "--data-dir",
        tmp_path / "img",
        "--file-list",
        tmp_path / "list.txt",
        "--arch",
        "convnet",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
    )
    assert_one_sentence(code, out, "list.txt is not UTF-8")


def test_damaged_score_files(tmp_path):
    ds = load_dataset("synthetic", num_samples=20, num_classes=2, image_size=4)
    good = score_file(ds, tmp_path / "s.npz")
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cases = {
        "list.npz": json.dumps([1, 2]),
        "nosize.npz": json.dumps({"format": "easyhard.scores", "num_classes": 2}),
    }
    for name, meta in cases.items():
        np.savez(tmp_path / name, **{**arrays, "metadata": np.array(meta)})
        code, out = cli("select", tmp_path / name, "--keep", "0.5", "--out", tmp_path / "sel")
        assert_one_sentence(code, out, name)
        assert "KeyError" not in out and "internal error" not in out
    # a merged file without the asked-for score
    merged = {
        "index": np.arange(20),
        "label": ds.labels,
        "metadata": np.array(
            json.dumps(
                {"format": "easyhard.merged", "num_classes": 2, "fingerprint": ds.fingerprint}
            )
        ),
        "score_el2n": np.random.rand(20),
    }
    np.savez(tmp_path / "m.npz", **merged)
    code, out = cli("select", tmp_path / "m.npz", "--keep", "0.5", "--out", tmp_path / "sel")
    assert_one_sentence(code, out, "holds no 'easiness' score")
    assert not (tmp_path / "sel").exists()


def test_one_step_runs_train(tmp_path):
    code, out = cli(
        "score",
        "--dataset",
        "synthetic",
        "--num-samples",
        "50",
        "--epochs",
        "1",
        "--image-size",
        "8",
        "--arch",
        "convnet",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, out


def test_image_extensions_are_case_insensitive_and_others_are_reported(tmp_path, caplog):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i, ext in enumerate([".JPEG", ".Jpeg", ".webp", ".png"]):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(
                tmp_path / "img" / c / f"{i}{ext}",
                format={".webp": "WEBP", ".png": "PNG"}.get(ext, "JPEG"),
            )
        (tmp_path / "img" / c / "notes.txt").write_text("x")
    with caplog.at_level("WARNING", logger="easyhard.datasets"):
        ds = load_dataset("imagefolder", root=str(tmp_path / "img"))
    assert len(ds) == 8
    assert "ignored 2 file(s) that are not images" in caplog.text and "notes.txt" in caplog.text


def test_internal_errors_say_how_to_see_the_traceback(tmp_path, monkeypatch):
    import easyhard.train as train

    def broken(*a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(train, "train_job", broken)
    r = run(["score", *SMALL, "--out", tmp_path / "o"])
    assert r.exit_code == 1 and "internal error (KeyError" in r.output and "--debug" in r.output
    r = run(["score", *SMALL, "--debug", "--out", tmp_path / "o"])
    assert isinstance(r.exception, KeyError)  # --debug lets the traceback through


def test_readme_shows_config_file_and_completion():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert "--config" in readme and "score-config.toml" in readme
    assert "_EASYHARD_COMPLETE=bash_source easyhard" in readme


def test_other_data_refusal_of_a_merged_file_names_the_options(tmp_path):
    """compress of a merged.npz with other dataset options: the refusal says what the scores were
    made on, read from its first run's statistics file (a merged file does not record it)."""
    assert run(["score", *SMALL, "--out", tmp_path / "o"]).exit_code == 0
    r = run(["compress", tmp_path / "o" / "merged.npz", "--dataset", "synthetic",
             "--num-samples", "150", "--keep", "0.5", "--out", tmp_path / "c"])  # fmt: skip
    assert r.exit_code == 1 and "other data" in r.output
    assert "(synthetic: num_samples=120, num_classes=3, image_size=8" in r.output, r.output
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["experiment", "removal", "s.npz", "--seeds", "0"], "Invalid value for '--seeds'"),
        (["analyze", "overlap", "a", "b", "--window", "0"], "Invalid value for '--window'"),
        (["score", "--epochs", "two"], "Invalid value for '--epochs'"),
        (["score", "--nosuch"], "No such option '--nosuch'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["--nosuch"], "No such option '--nosuch'"),
    ],
)
def test_usage_errors_are_one_sentence_with_exit_status_1(tmp_path, args, needle):
    """The README's promise holds for click's own errors too: no usage block, exit status 1."""
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "--help`)" in lines[0], r.output
    assert "Usage:" not in r.output and "Try " not in r.output


def test_a_bad_value_in_a_config_file_is_one_sentence_too(tmp_path):
    (tmp_path / "c.toml").write_text("dataset = 5\n")
    r = CliRunner().invoke(
        main, ["score", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and f"'dataset' in {tmp_path / 'c.toml'}" in r.output
    assert "Usage:" not in r.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--clean-every", "3", "--epochs", "1"], "--clean-every (3) is more than the 1 epoch(s)"),
        (["--clean-steps", "99", "--epochs", "1"], "--clean-steps (99) is more than the 1 step(s)"),
        (["--seed", "4294967295", "--runs", "2"], "run 1 would use seed 4294967296, beyond"),
        (["--seed", "100000000000000000000"], "is not in the range 0<=x<=4294967295"),
    ],
)
def test_settings_the_run_cannot_satisfy_are_refused_before_any_folder(tmp_path, args, needle):
    """A clean view that would never be recorded (it wrote an empty clean-view file), a seed past
    32 bits (run 0 trained, then run 1 failed naming no option)."""
    data = ["--dataset", "synthetic", "--num-samples", "100", "--arch", "convnet"]
    r = CliRunner().invoke(
        main, ["score", *data, "--device", "cpu", *args, "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and needle in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_config_files_in_other_encodings(tmp_path):
    """A UTF-8 byte-order mark is accepted (it read as 'Invalid statement'); a file that is not
    UTF-8 is one sentence (it was an internal UnicodeDecodeError)."""
    (tmp_path / "bom.toml").write_bytes("\ufeffepochs = 0\n".encode("utf-8"))
    r = CliRunner().invoke(
        main, ["score", "--config", str(tmp_path / "bom.toml"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and "'epochs' in" in r.output and "Invalid statement" not in r.output
    (tmp_path / "latin.toml").write_bytes('title = "caf\xe9"\n'.encode("latin-1"))
    r = CliRunner().invoke(
        main, ["score", "--config", str(tmp_path / "latin.toml"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and "is not UTF-8 text (byte 12 is 0xe9)" in r.output
    assert "internal error" not in r.output and not (tmp_path / "o").exists()


def test_late_or_unclear_messages_name_the_cause(tmp_path):
    """File lists: a label that would make billions of classes is refused before anything is
    allocated, naming the line (the process was OOM-killed); a file listed twice is named with
    its lines. Synthetic data that cannot fit in memory, or has more classes than easyhard
    handles, is refused.
    --resume with --force is refused (--force was ignored); a symbolic link as --out is named
    as one (it was 'not a folder')."""
    from PIL import Image

    (tmp_path / "d" / "c").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / "d" / "c" / name)
    data = ["--dataset", "imagefolder", "--data-dir", str(tmp_path / "d")]
    cases = [
        ("c/a.png 0\nc/b.png 99999999999\n", "list.txt:2: label 99999999999 makes"),
        ("c/a.png 0\nc/b.png 1\nc/a.png 1\n", "lists c/a.png twice (lines 1 and 3)"),
    ]
    for text, needle in cases:
        (tmp_path / "list.txt").write_text(text)
        r = CliRunner().invoke(
            main,
            [
                "score",
                *data,
                "--file-list",
                str(tmp_path / "list.txt"),
                "--out",
                str(tmp_path / "o"),
            ],
        )
        assert r.exit_code == 1 and needle in r.output, r.output
    synthetic = ["score", "--dataset", "synthetic", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, [*synthetic, "--num-classes", "1000000000000"])
    assert r.exit_code == 1 and "cannot have 1000000000000 classes" in r.output
    assert "--num-classes" in r.output
    r = CliRunner().invoke(main, [*synthetic, "--num-samples", "100000000", "--image-size", "224"])
    assert r.exit_code == 1 and "more than half this machine's" in r.output
    r = CliRunner().invoke(main, [*synthetic, "--resume", "--force"])
    assert r.exit_code == 1 and "give one of them" in r.output
    assert not (tmp_path / "o").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "x.txt").write_text("x")
    from easyhard.io import OutputExistsError, check_replaceable

    with pytest.raises(OutputExistsError, match=r"link is a symbolic link \(to .*real\)"):
        check_replaceable(str(tmp_path / "link"), "m.json", "easyhard.x", True)


def test_ctrl_c_says_what_continues_the_work(tmp_path, monkeypatch):
    """An interrupted command (Ctrl-C) exits with 130 and says how to continue, instead of
    click's bare 'Aborted!'."""
    import easyhard.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(easyhard.train, "train_job", interrupted)
    r = run(["score", *synthetic(40, 2), "--device", "cpu", "--out", tmp_path / "o"])
    assert r.exit_code == 130
    assert "interrupted; the same command with --resume continues" in r.output
    assert "Aborted" not in r.output


def test_a_resume_says_what_it_trained_now(tmp_path):
    """The summary line's cost is the scores' (every run's training, earlier sessions'
    included): a resume says which runs finished earlier, so that "trained on N images" after a
    resume that trained nothing no longer reads as training done now."""
    out = tmp_path / "o"
    job = ["score", *SMALL[:-1], "--arch", "resnet8", "--out", out]  # SMALL ends in --quiet
    r = run(job)
    assert r.exit_code == 0 and "finished earlier" not in r.output, r.output
    shutil.rmtree(out / "resnet8-run0")
    r = run([*job, "--resume"])
    assert "(1 finished earlier, reused)" in r.output, r.output
    r = run([*job, "--resume", "--json"])
    summary = json.loads(r.output)
    assert (summary["reused"], summary["trained"]) == (2, 0)
    r = run([*job, "--resume"])
    assert "(all finished earlier: nothing trained now)" in r.output, r.output
    assert "their training: 240 images" in r.output, r.output  # 120 examples, 1 epoch, 2 runs
    # a resume that names fewer runs merges fewer: said (it was silent)
    r = run([*job[:-4], "--out", out, "--resume"])
    assert r.exit_code == 0 and "run folder(s) this job does not name (resnet8-run0)" in r.output
    assert "merged.npz leaves them out" in r.output and "scores: 1 run(s)" in r.output
