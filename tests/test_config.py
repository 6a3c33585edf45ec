"""The YAML config: defaults, overrides, and a precise one-line error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from patrol_deploy.config import DEFAULT_CONFIG, Config, load_config
from patrol_deploy.errors import ConfigError
from tests.scripts import load_script


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_default_loads() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.data.source == "mnist"
    assert cfg.model.name == "small_resnet"
    assert cfg.budget.edge_macs == pytest.approx(1.5e7)  # "1.5e7" is a string to YAML 1.1; pydantic parses it


def test_no_file_gives_the_schema_defaults() -> None:
    assert load_config(None) == Config()


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == Config()


def test_overrides_parse_yaml_values_and_nest(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "train: {epochs: 3}\n"),
                      ["train.epochs=5", "budget.edge_macs=2e7", "attacks.names=[whitebox]",
                       "patrol.lipschitz.alpha=[0.1, 0.2]", "data.limit="])
    assert cfg.train.epochs == 5
    assert cfg.budget.edge_macs == pytest.approx(2e7)
    assert cfg.attacks.names == ["whitebox"]
    assert cfg.patrol.lipschitz.alpha == [0.1, 0.2]
    assert cfg.data.limit is None


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "configs"
    sub.mkdir()
    cfg = load_config(write(sub, "data: {source: imagefolder, root: ../images}\nmodel: {checkpoint: w.pt}\n"))
    assert cfg.data.root == sub / "../images"
    assert cfg.model.checkpoint == sub / "w.pt"


def test_dump_is_plain_json_data(tmp_path: Path) -> None:
    dumped = load_config(write(tmp_path, "data: {source: imagefolder, root: /x}\n")).dump()
    assert dumped["data"]["root"] == "/x"
    assert Config.model_validate(dumped) == load_config(write(tmp_path, "data: {source: imagefolder, root: /x}\n"))


@pytest.mark.parametrize(("text", "overrides", "expected"), [
    ("data: [unclosed\n", (), "line 2, column 1: malformed YAML"),
    ("data:\n  source: mnist\n   limit: 3\n", (), "line 3, column 9: malformed YAML: mapping values"),
    ("data: {sorce: mnist}\n", (), "data.sorce: unknown key"),
    ("trian: {epochs: 1}\n", (), "trian: unknown key"),
    ("train: {epochs: many}\n", (), "train.epochs: Input should be a valid integer"),
    ("train: {epochs: 0}\n", (), "train.epochs: Input should be greater than 0 (got 0)"),
    ("data: {channels: 2}\n", (), "data.channels: Input should be 1 or 3"),
    ("data: {test_fraction: 0.5, aux_fraction: 0.5}\n", (), "must leave at least 5% for training"),
    ("budget: {edge_macs: null}\n", (), "set at least one of edge_macs, edge_params, upload_bytes"),
    ("budget: {edge_macs: -5}\n", (), "budget.edge_macs: Input should be greater than 0"),
    ("budget: {edge_macs: .nan}\n", (), "budget.edge_macs: Input should be a finite number"),
    ("- a\n- b\n", (), "the top level must be a mapping"),
    ("base: &b {epochs: 1}\ntrain: *b\n", (), "aliases"),
    ("", ("train.epochs",), "has no '='"),
    ("", ("train..epochs=1",), "empty key"),
    ("", ("nosuch.key=1",), "nosuch: unknown key"),
    ("", ("train.epochs=[1",), "--set train.epochs"),
    ("seed: 1\n", ("seed.x=1",), "'seed' is not a section"),
])
def test_bad_config_names_the_key_and_the_fix(tmp_path: Path, text: str, overrides: tuple[str, ...],
                                              expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert info.value.fix
    assert info.value.exit_code == 2


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_many_errors_are_summarised_on_one_line(tmp_path: Path) -> None:
    text = "train: {epochs: a, batch_size: b, lr: c, weight_decay: d, triplet_margin: e, device: 3}\n"
    with pytest.raises(ConfigError, match=r"\(\+1 more\)") as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def _docs_script() -> ModuleType:
    return load_script("gen_config_docs")


def test_docs_config_md_is_up_to_date() -> None:
    script = _docs_script()
    assert script.DOC.read_text(encoding="utf-8") == script.render(), \
        "docs/config.md is out of date: run python scripts/gen_config_docs.py"


def test_docs_document_every_key_and_the_example_is_valid(tmp_path: Path) -> None:
    script = _docs_script()
    text = script.render()

    def keys(model: BaseModel, prefix: str = "") -> list[str]:
        out = []
        for name in type(model).model_fields:
            value = getattr(model, name)
            key = f"{prefix}{name}"
            out += keys(value, key + ".") if isinstance(value, BaseModel) else [key]
        return out

    for key in keys(Config()):
        assert f"| `{key}` |" in text, key
    assert load_config(write(tmp_path, script.EXAMPLE)).budget.upload_dtype == "int8"
