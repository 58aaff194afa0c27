"""The atomic writer: a failed or interrupted write leaves the old file whole and nothing half-written."""

import pytest
import torch

from vit_tutorial import CheckpointError, ViT
from vit_tutorial.checkpoint import save_checkpoint

from .conftest import TINY


def test_a_full_disk_while_checkpointing_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(path, {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))


def test_ctrl_c_while_writing_a_checkpoint_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model_config": TINY.to_dict(), "model": ViT(TINY).state_dict()})
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))
