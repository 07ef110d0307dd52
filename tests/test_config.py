"""The typed config tree: TOML + flags, strict keys and types, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceattr.config import TrainConfig, load_config, save_config
from faceattr.errors import FaceattrError


def test_flags_override_the_file_and_the_result_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('epochs = 3\n[model]\nname = "resnet18"\nimage_size = [96, 80]\n[optim]\nlr = 0.1\n')
    cfg = load_config(f, {"optim.lr": "0.01", "data.attributes": "Male Smiling", "epochs": None})
    assert cfg.epochs == 3 and cfg.model.name == "resnet18" and cfg.model.image_size == [96, 80]
    assert cfg.optim.lr == 0.01 and cfg.data.attributes == ["Male", "Smiling"]
    assert load_config(save_config(cfg, tmp_path / "out.toml")) == cfg


def test_list_flags_take_the_config_files_own_syntax_too() -> None:
    from faceattr.config import parse_assignments

    # --set distill.teachers=["a", "b"] once became the two names '["a"' and '"b"]'.
    for value in ('["a", "b"]', "a,b", "a b"):
        cfg = load_config(None, parse_assignments([f"distill.teachers={value}"]))
        assert cfg.distill.teachers == ["a", "b"], value
    assert load_config(None, parse_assignments(["model.image_size=[160, 128]"])).model.image_size == [160, 128]
    with pytest.raises(FaceattrError, match=r"model\.image_size\[0\]: expected an integer, got .a."):
        load_config(None, parse_assignments(['model.image_size=["a"]']))
    with pytest.raises(FaceattrError, match=r"distill\.teachers: .* is not a list; write a,b or"):
        load_config(None, parse_assignments(['distill.teachers=["a", ']))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"model.nme": "x"}, r"unknown key 'model.nme' \(did you mean name\?\)"),
        ({"epocs": 2}, r"did you mean epochs"),
        ({"epochs": "two"}, r"epochs: expected an integer"),
        ({"model.pretrained": "maybe"}, r"expected true/false"),
        ({"optim.lr": [1]}, r"expected a finite number"),
        ({"optim.lr": "nan"}, r"optim.lr: expected a finite number"),
    ],
)
def test_bad_keys_and_types_are_one_clear_error(overrides: dict, match: str) -> None:
    with pytest.raises(FaceattrError, match=match):
        load_config(None, overrides)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(FaceattrError, match="not valid TOML"):
        load_config(bad)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_default_recipe_loads() -> None:
    cfg = load_config(CONFIGS / "default.toml")
    assert isinstance(cfg, TrainConfig) and cfg.model.pretrained and cfg.model.finetune_stages == -1
    assert cfg.data.holdout_fraction == 0.1 and cfg.data.val_split == "holdout" and cfg.out == "runs/default"


@pytest.mark.parametrize("path", sorted((CONFIGS / "candidates").glob("*.toml")), ids=lambda p: p.stem)
def test_candidate_recipes_load_and_write_their_own_run(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.out == f"runs/{path.stem}"  # one folder per recipe: no candidate overwrites another
    assert all(t.startswith("runs/") for t in cfg.distill.teachers)
