"""deploy.target: the channel counts, opset and quantization route a hardware target sets, unless set explicitly."""

from __future__ import annotations

import pytest

from patrol_deploy.config import load_config
from patrol_deploy.errors import ConfigError
from patrol_deploy.targets import TARGETS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_sets_what_is_not_set(target: str) -> None:
    cfg = load_config(None, [f"deploy.target={target}"])
    t = TARGETS[target]
    assert (cfg.patrol.prune.round_to, cfg.patrol.prune.deploy_min_channels) == (t.round_to, t.min_channels) == (8, 16)
    assert (cfg.export.opset, cfg.quantize.route) == (t.opset, t.route)


def test_default_is_orin_and_xavier_gets_tensorrt_8() -> None:
    cfg = load_config(None, [])
    assert cfg.deploy.target == "jetson-orin" and (cfg.export.opset, cfg.quantize.route) == (19, "onnx")
    xavier = load_config(None, ["deploy.target=jetson-xavier"])
    assert (xavier.export.opset, xavier.quantize.route) == (17, "torch")  # JetPack 5: TensorRT 8.5, opset <= 17


def test_explicit_values_win_over_the_target() -> None:
    cfg = load_config(None, ["deploy.target=jetson-xavier", "patrol.prune.round_to=1",
                             "patrol.prune.deploy_min_channels=1", "export.opset=19", "quantize.route=onnx"])
    assert (cfg.patrol.prune.round_to, cfg.patrol.prune.deploy_min_channels) == (1, 1)
    assert (cfg.export.opset, cfg.quantize.route) == (19, "onnx")


def test_unknown_target_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"deploy.target.*jetson-orin.*jetson-xavier.*x86-cpu"):
        load_config(None, ["deploy.target=jetson-nano"])


@pytest.mark.parametrize("opset", ["12", "0"])
def test_opset_below_13_is_a_config_error(opset: str) -> None:
    """QAT and PTQ export Q/DQ ONNX, which needs opset 13 or later."""
    with pytest.raises(ConfigError, match=r"export\.opset"):
        load_config(None, [f"export.opset={opset}"])
