import pytest

from vit_tutorial import TrainConfig, ViTConfig


def test_default_config_describes_the_card_model():
    config = ViTConfig()
    assert (config.grid_size, config.num_patches, config.num_tokens) == (4, 16, 17)
    assert (config.patch_dim, config.head_dim) == (192, 32)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"patch_size": 5}, "not divisible by patch_size"),
        ({"heads": 3}, "not divisible by heads"),
        ({"depth": 0}, "positive integer"),
        ({"dropout": 1.0}, r"\[0, 1\)"),
    ],
)
def test_bad_model_config_says_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"augment": "mixup"}, "augment must be one of"),
        ({"epochs": 0}, "positive"),
        ({"momentum": 0.0}, "nesterov needs"),
    ],
)
def test_bad_train_config_says_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_configs_round_trip_through_dicts():
    assert ViTConfig.from_dict(ViTConfig(depth=3).to_dict()) == ViTConfig(depth=3)
    assert TrainConfig.from_dict(TrainConfig(lr=0.1).to_dict()) == TrainConfig(lr=0.1)
    with pytest.raises(ValueError, match="no field"):
        ViTConfig.from_dict({"width": 3})
