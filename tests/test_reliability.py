"""The fault classes of the third adversarial pass, one test (or a few) per class: what is inside a file is
checked where it is loaded, identities are compared instead of names, sizes are bounded, links are never
followed into a user's file, user strings cannot break line-based output, and caches are verified."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vit_tutorial import TrainConfig, ViT, ViTConfig
from vit_tutorial.checkpoint import load_checkpoint, load_model, save_checkpoint
from vit_tutorial.errors import CheckpointError, shown
from vit_tutorial.explorer import json_in_html
from vit_tutorial.run_folder import locked
from vit_tutorial.sweep import GridError, _cell, load_grid

from .conftest import TINY, one_clean_line, payload_of, run, train_args, train_tiny

# 1. Contents trusted once the container passes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["model"].update({7: torch.zeros(1)}), "named 7, not a weight's name"),
        (lambda p: p.update(history=[1, 2]), "history entry is a dict"),
        (lambda p: p.update(history=[{"epoch": "one"}]), "unknown field|should be int"),
    ],
)
def test_what_a_checkpoint_holds_is_checked_when_it_is_loaded(tmp_path, change, message):
    payload = payload_of(ViT(TINY))
    change(payload)
    path = save_checkpoint(tmp_path / "m.pt", payload)  # a valid checksum over the wrong content
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p["scheduler"].update(last_epoch="5"), "schedule's step"),
        (lambda p: next(iter(p["optimizer"]["state"].values())).update(momentum_buffer=torch.zeros(3)), "momentum"),
        (lambda p: p["optimizer"].update(state={99: {}}), "parameter 99"),
    ],
)
def test_resume_checks_the_optimiser_and_schedule_state_before_loading(
    fake_data, quick_train_config, tmp_path, damage, message
):
    train_tiny(fake_data, quick_train_config.replace(epochs=1), out_dir=tmp_path)
    payload = load_checkpoint(tmp_path / "last.pt")
    payload["train_config"]["epochs"] = 2
    damage(payload)
    save_checkpoint(tmp_path / "last.pt", payload)
    with pytest.raises(CheckpointError, match=f"cannot be resumed .*{message}"):
        train_tiny(fake_data, quick_train_config.replace(epochs=2), out_dir=tmp_path, resume=True)


def test_a_grid_that_nests_too_deep_or_is_no_file_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("[recipes.a]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(GridError, match=r"nests|not valid TOML"):
        load_grid(deep)
    fifo = tmp_path / "grid.toml"
    os.mkfifo(fifo)
    with pytest.raises(GridError, match="not a file"):
        load_grid(fifo)  # returns at once instead of waiting for a writer


def test_cached_fine_tuning_weights_of_the_wrong_kind_are_refused(tmp_path, monkeypatch):
    from vit_tutorial.errors import WeightsUnavailableError
    from vit_tutorial.finetune import FineTunedViT, load_imagenet_weights, weights_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights_file().parent.mkdir(parents=True)
    model = FineTunedViT()
    for cached, message in (([1, 2, 3], "not weights by name"), ({"conv_proj.weight": torch.zeros(3)}, "expected")):
        torch.save(cached, weights_file())
        with pytest.raises(WeightsUnavailableError, match=message):
            load_imagenet_weights(model, download=False)


# 2. Weights of the wrong kind ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64, torch.bool])
def test_weights_that_are_not_real_floating_point_numbers_are_refused(tmp_path, dtype):
    payload = payload_of(ViT(TINY))
    payload["model"]["head.weight"] = payload["model"]["head.weight"].to(dtype)
    path = save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match="not a floating-point weight"):
        load_model(path)


# 3. Sizes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ViTConfig(dim=16_777_216), "parameters, more than"),
        (lambda: ViTConfig(mlp_dim=10**12), "parameters, more than"),
        (lambda: ViTConfig(depth=10**9), "depth is at most"),
        (lambda: TrainConfig(randaugment_n=10**6), "randaugment_n is at most"),
        (lambda: TrainConfig(batch_size=10**9), "batch_size is at most"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_up_front_naming_the_option(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# 4. and 5. Paths: empty, and identities instead of names --------------------------------------------------------


@pytest.mark.slow  # commands in subprocesses
def test_an_empty_path_is_refused_and_metrics_are_guarded_by_content(cli_workspace):
    root, env = cli_workspace
    for command in (("train", "--out", ""), ("sweep", "grid.toml", "--out", ""), ("evaluate", "--checkpoint", "")):
        assert "an empty path" in one_clean_line(run(*command, env=env))
    a, b = root / "runs" / "a", root / "runs" / "b"
    assert run(*train_args(a), env=env).returncode == 0
    assert run(*train_args(b, "--seed", "1"), env=env).returncode == 0
    own = (a / "metrics.json").read_text()
    other = ("evaluate", "--checkpoint", str(b / "best.pt"), "--metrics", str(a / "metrics.json"))
    assert "holds the metrics of another checkpoint" in one_clean_line(run(*other, env=env))
    assert (a / "metrics.json").read_text() == own  # run A's own metrics are left alone


# 6. Links and copies -------------------------------------------------------------------------------------------


def test_a_lock_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(precious)
    with pytest.raises(CheckpointError, match="is a link"), locked(tmp_path / "run"):
        pass
    os.link(precious, tmp_path / "hard")
    (tmp_path / "run" / ".lock").unlink()
    os.link(precious, tmp_path / "run" / ".lock")
    with pytest.raises(CheckpointError, match="hard link"), locked(tmp_path / "run"):
        pass
    assert precious.read_text() == "mine"


def test_the_winner_is_copied_whole_or_not_at_all(tmp_path):
    from vit_tutorial.sweep import _copy_whole

    source = tmp_path / "best.pt"
    source.write_bytes(b"new weights")
    target = tmp_path / "winner.pt"
    target.write_bytes(b"old winner")
    _copy_whole(source, target)
    assert target.read_bytes() == b"new weights"
    with pytest.raises(CheckpointError, match=r"cannot read .*absent\.pt"):
        _copy_whole(tmp_path / "absent.pt", target)  # the error names the file that failed
    assert target.read_bytes() == b"new weights"
    assert not list(tmp_path.glob(".winner.pt.*"))


# 7. User strings in line-based output ----------------------------------------------------------------------------


def test_user_strings_cannot_break_a_table_row_or_a_message_line():
    assert _cell("a|b\nc") == "a\\|b c"
    assert "\n" not in shown("runs/odd\nname") and shown("runs/odd\nname") == "runs/odd\\nname"
    import pickle

    from vit_tutorial.errors import first_line

    line = first_line(pickle.UnpicklingError("Weights only load failed \x1b[1mweights_only=False\x1b[0m"))
    assert "weights_only=False" not in line and "\x1b" not in line
    assert first_line(RuntimeError("\x1b[31mred\x1b[0m text")) == "red text"


# 8. The decoded cache ------------------------------------------------------------------------------------------


def test_the_cache_notices_a_replaced_image_and_edited_pixels(image_folder, tmp_path):
    from PIL import Image

    from vit_tutorial.data import cache_dir, load_cifar10

    first = load_cifar10(image_folder, val_size=5)
    target = image_folder / "test" / "cat" / "0000.png"
    stat = target.stat()
    replacement = tmp_path / "other.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(replacement)
    shutil.copyfile(replacement, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -t` leave it
    second = load_cifar10(image_folder, val_size=5)
    cat = second.test.images[second.test.labels == 3][0]
    assert cat[:, 0, 0].tolist() == [1, 2, 3]
    assert second.provenance["test_fingerprint"] != first.provenance["test_fingerprint"]
    (cache,) = [p for p in cache_dir().glob("cifar10-imagefolder-*-test-*.npz")]
    with np.load(cache) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["images"][0] = 255 - arrays["images"][0]  # pixels edited under the old fingerprint
    np.savez(cache, **arrays)
    third = load_cifar10(image_folder, val_size=5)
    assert torch.equal(third.test.images, second.test.images)  # decoded again, not served edited


# 9. Transparency -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "key"), [("RGB", (10, 20, 30)), ("L", 7)])
def test_a_colour_key_is_laid_on_white_like_alpha(tmp_path, mode, key):
    from PIL import Image

    from vit_tutorial.images import read_rgb

    image = Image.new(mode, (4, 4), key)
    path = tmp_path / "keyed.png"
    image.save(path, transparency=key)
    assert np.asarray(read_rgb(path))[0, 0].tolist() == [255, 255, 255]


# 10. and 11. Signals after the first; a closed stdout ------------------------------------------------------------


@pytest.mark.slow  # commands in subprocesses
def test_a_second_signal_and_a_closed_stdout_do_not_break_a_run(cli_workspace):
    import signal
    import time

    root, env = cli_workspace
    process = subprocess.Popen(
        [sys.executable, "-m", "vit_tutorial", *train_args(root / "twice", "--epochs", "500")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (root / "twice" / "last.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # 10 ms later, while the first is being handled
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and len(stderr.strip().splitlines()) == 1, stderr
    piped = subprocess.run(
        f"{sys.executable} -m vit_tutorial {' '.join(train_args(root / 'piped'))} | head -1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.stderr.strip() == "" and (root / "piped" / "best.pt").is_file(), piped.stderr


# 14. JSON inside HTML --------------------------------------------------------------------------------------------


def test_json_in_html_cannot_close_its_script_or_open_a_comment():
    text = json_in_html({"weights_url": "<!--<script></script>&"})
    assert "<" not in text and ">" not in text and json.loads(text)["weights_url"] == "<!--<script></script>&"
