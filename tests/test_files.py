"""The atomic writer: a failed or interrupted write leaves the old file whole and nothing half-written."""

import pytest
import torch

from vit_tutorial import CheckpointError, ViT
from vit_tutorial.checkpoint import save_checkpoint

from .conftest import TINY, payload_of


def test_a_full_disk_while_checkpointing_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", payload_of(ViT(TINY)))
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(path, payload_of(ViT(TINY)))
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


def test_ctrl_c_while_writing_a_checkpoint_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", payload_of(ViT(TINY)))
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, payload_of(ViT(TINY)))
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


def test_a_write_that_fails_with_any_error_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """torch.save reports a full disk or a file-size limit as RuntimeError, not OSError."""
    path = save_checkpoint(tmp_path / "m.pt", payload_of(ViT(TINY)))
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=r"cannot write .*m\.pt \(\[enforce fail.*\); choose another --out"):
        save_checkpoint(path, payload_of(ViT(TINY)))
    assert path.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name != "m.pt"]


def test_two_writers_of_one_path_never_share_a_temporary_file(tmp_path):
    from vit_tutorial.files import write_atomically

    seen = []

    def outer(handle):
        seen.append(handle.name)
        write_atomically(tmp_path / "out.json", lambda inner: seen.append(inner.name) or inner.write(b"inner"))
        handle.write(b"outer")

    write_atomically(tmp_path / "out.json", outer)
    assert len(set(seen)) == 2 and (tmp_path / "out.json").read_bytes() == b"outer"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
