"""Fuzzing the config loader: TOML files (any bytes, any shape of tables) and `--set KEY=VALUE` flags.

Only FaceattrError may escape; whatever loads must save and load back unchanged; a well-typed value
for a real key is always taken.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import typing
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from faceattr.config import TrainConfig, load_config, parse_assignments, save_config
from faceattr.errors import FaceattrError

pytestmark = pytest.mark.fuzz


def _leaves(cls: type, prefix: str = "") -> dict[str, typing.Any]:
    """Dotted key -> annotation of every scalar or list field of the config tree."""
    out: dict[str, typing.Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_leaves(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


LEAVES = _leaves(TrainConfig)
KEYS = sorted(LEAVES) + ["model", "data", "optim.lr.x", "", ".", "model..name", "epocs", "data.sources.root"]
SCALARS = st.one_of(st.integers(-(10**20), 10**20), st.floats(), st.booleans(), st.text(max_size=8),
                    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3))
TABLE_KEYS = st.sampled_from(["name", "lr", "image_size", "sources", "hflip", "root", "epochs", "weight", "zzz"])
TOML_VALUES = st.recursive(SCALARS, lambda inner: st.dictionaries(TABLE_KEYS, inner, max_size=3)
                           | st.lists(st.dictionaries(TABLE_KEYS, inner, max_size=2), max_size=2), max_leaves=6)
TOP_KEYS = st.sampled_from(["epochs", "model", "optim", "data", "augment", "distill", "seed", "out", "x"])


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """TOML documents of the right and wrong shapes, and now and then bytes that are not TOML or not UTF-8."""
    kind = draw(st.sampled_from(["toml", "toml", "toml", "text", "bytes"]))
    if kind == "toml":
        return tomli_w.dumps(draw(st.dictionaries(TOP_KEYS, TOML_VALUES, max_size=4))).encode()
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=60))


ASSIGNMENTS = st.lists(
    st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=8)), st.text(max_size=10)),
    max_size=3,
)


@given(config_files(), ASSIGNMENTS)
def test_files_and_flags_load_or_fail_with_one_line(doc: bytes, flags: list[str]) -> None:
    d = Path(tempfile.mkdtemp())
    try:
        (d / "c.toml").write_bytes(doc)
        try:
            cfg = load_config(d / "c.toml", parse_assignments(flags))
        except FaceattrError as e:
            assert "\n" not in str(e)
            return
        assert isinstance(cfg, TrainConfig)
        assert load_config(save_config(cfg, d / "out.toml")) == cfg
    finally:
        shutil.rmtree(d)


def _valid_value(tp: typing.Any) -> st.SearchStrategy[typing.Any]:
    """Values of a field's type, written as a flag would give them (strings) or as TOML would."""
    if tp is bool:
        return st.sampled_from(["true", "false", "1", "0", "yes", "no", True, False])
    if tp is int:
        return st.one_of(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6).map(str))
    if tp is float:
        return st.one_of(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6).map(repr))
    if tp is str:
        return st.text(max_size=10)
    return st.nothing()


@given(st.data())
def test_a_well_typed_value_for_a_real_key_is_always_taken(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from([k for k, tp in LEAVES.items() if tp in (bool, int, float, str)]))
    tp = LEAVES[key]
    value = data.draw(_valid_value(tp))
    cfg = load_config(None, {key: value})
    node: typing.Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    if tp is bool:
        assert node is (str(value).lower() in ("true", "1", "yes"))
    else:
        assert node == tp(value)
