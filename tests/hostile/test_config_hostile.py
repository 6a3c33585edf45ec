"""Hostile configs: wrong types, unknown keys, alias bombs, code tags, deep nesting and impossible budgets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patrol_deploy.config import Config, load_config
from patrol_deploy.errors import ConfigError
from tests.hostile.conftest import refused

EXIT_BAD_INPUT = 2

BAD_YAML = {
    "wrong_types": ("seed: abc\ntrain: {epochs: -3, lr: [1]}\n", "seed"),
    "unknown_keys": ("bogus: 1\ndata: {wat: 2}\n", "unknown key"),
    "alias_bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "aliases"),
    "merge_key_alias": ("base: &base {epochs: 1}\ntrain: {<<: *base}\n", "aliases"),
    "python_tag": (f"!!python/object/apply:os.system ['touch {os.devnull}']\n", "constructor"),
    "deep_nesting": ("[" * 50_000, "nested too deeply"),
    "top_level_list": ("- seed\n- 1\n", "mapping"),
    "section_is_scalar": ("data: 3\n", "data"),
    "tabs_and_garbage": ("data:\n\t- : :\n", "malformed"),
}


@pytest.mark.parametrize("kind", list(BAD_YAML))
def test_bad_yaml_is_refused(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, match = BAD_YAML[kind]
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    refused(["splits", str(config)], capsys, EXIT_BAD_INPUT, match, watch=(tmp_path,))


def test_random_bytes_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bin.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    refused(["splits", str(config)], capsys, EXIT_BAD_INPUT, "yaml", watch=(tmp_path,))


@pytest.mark.parametrize("value", ["0", "-1", "-1e9", "nan", ".nan", "inf", ".inf", "-.inf", "1e400", "abc", "[1]",
                                   "{a: 1}"])
@pytest.mark.parametrize("key", ["edge_macs", "edge_params", "upload_bytes"])
def test_impossible_budget_is_refused(key: str, value: str, toy_config: Path, out_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    refused(["splits", str(toy_config), "--set", f"budget.{key}={value}"], capsys, EXIT_BAD_INPUT,
            f"budget.{key}", watch=(out_dir, toy_config.parent))


@pytest.mark.parametrize("value", ["1", "1e-300", "true"])
def test_budget_below_every_split_is_refused(value: str, toy_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["splits", str(toy_config), "--set", f"budget.edge_macs={value}"], capsys, EXIT_BAD_INPUT,
            "no split fits the edge budget", watch=(toy_config.parent,))


@pytest.mark.parametrize("override", ["budget", "budget.edge_macs", "=1", "budget..edge_macs=1", "seed.x=1",
                                      "train.epochs=*a", "data.limit=0", "data.channels=2"])
def test_bad_override_is_refused(override: str, toy_config: Path, out_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", str(toy_config), "--set", override, "--out", str(out_dir)], capsys, EXIT_BAD_INPUT,
            watch=(out_dir,))


KEYS = ["seed", "data.source", "data.limit", "data.image_size", "data.val_fraction", "model.width", "model.task",
        "train.epochs", "train.lr", "budget.edge_macs", "budget.upload_dtype", "attacks.names", "attacks.eval_images",
        "patrol.lipschitz.alpha", "defenses.grids", "export.opset", "gate.max_ssim_increase", "nope", "data.nope"]
VALUES = st.one_of(st.text(max_size=40), st.sampled_from(["nan", ".inf", "-1", "0", "1e308", "[]", "{}", "~", "&a x",
                                                          "*a", "!!binary aGk=", "[[[[", "'", "- - -", "1e-400"]),
                   st.integers().map(str), st.floats().map(str))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=20)), VALUES), max_size=4))
def test_load_config_gives_config_or_config_error(pairs: list[tuple[str, str]]) -> None:
    """Any --set overrides give a valid Config or a ConfigError, never another exception."""
    try:
        cfg = load_config(None, [f"{key}={value}" for key, value in pairs])
    except ConfigError as exc:
        assert exc.problem and exc.fix
    else:
        assert isinstance(cfg, Config)
