"""The model registry: torchvision ResNet-18/50, MobileNetV2 and a small ResNet, as BlockNets.

No weights are downloaded: models start randomly initialised or from a user
checkpoint (a state dict, read with `weights_only=True`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from patrol_deploy.config import ModelConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.models.blocknet import BlockNet, Head, ReIDHead
from patrol_deploy.models.small_resnet import small_resnet_blocks
from patrol_deploy.registry import Registry

# A builder returns (blocks, head_in_features, native) where `native` is the
# torchvision module the blocks were taken from (for loading its checkpoints).
Builder = Callable[[ModelConfig, int], tuple["OrderedDict[str, nn.Module]", int, nn.Module | None]]
MODELS: Registry[Builder] = Registry("model", "patrol_deploy.models")


@MODELS.register("small_resnet")
def _small_resnet(cfg: ModelConfig, in_channels: int) -> tuple[OrderedDict[str, nn.Module], int, None]:
    blocks, width = small_resnet_blocks(in_channels, cfg.width, stages=cfg.stages)
    return blocks, width, None


def _first_conv(in_channels: int, conv: nn.Conv2d) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                     conv.padding, bias=conv.bias is not None)  # type: ignore[arg-type]


def _torchvision_resnet(arch: str) -> Builder:
    def build(cfg: ModelConfig, in_channels: int) -> tuple[OrderedDict[str, nn.Module], int, nn.Module]:
        tv = __import__("torchvision.models", fromlist=[arch])
        net = getattr(tv, arch)(weights=None)
        net.conv1 = _first_conv(in_channels, net.conv1)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        blocks["stem"] = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            blocks[name] = getattr(net, name)
        return blocks, net.fc.in_features, net

    return build


MODELS.add("resnet18", _torchvision_resnet("resnet18"))
MODELS.add("resnet50", _torchvision_resnet("resnet50"))


@MODELS.register("mobilenet_v2")
def _mobilenet_v2(cfg: ModelConfig, in_channels: int) -> tuple[OrderedDict[str, nn.Module], int, nn.Module]:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    first = net.features[0][0]
    net.features[0][0] = _first_conv(in_channels, first)
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        (f"features{i}", m) for i, m in enumerate(net.features)
    )
    return blocks, net.last_channel, net


def create_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> BlockNet:
    """Build `cfg.name` for `num_classes` and `in_channels`, loading `cfg.checkpoint` if given."""
    blocks, feat_dim, native = MODELS.get(cfg.name)(cfg, in_channels)
    state = load_checkpoint(cfg.checkpoint) if cfg.checkpoint is not None else None
    if state is not None and native is not None and not any(k.startswith("blocks.") for k in state):
        # A plain torchvision checkpoint: load it into the torchvision module, then take its head weights.
        _load_native(native, state, cfg, num_classes)
    head: nn.Module
    head_loaded = False
    if cfg.task == "reid":
        head = ReIDHead(feat_dim, num_classes, cfg.embedding_dim)
    else:
        head = Head(feat_dim, num_classes)
        fc = getattr(native, "fc", None) or getattr(getattr(native, "classifier", None), "1", None)
        has_fc = state is not None and any(k.startswith(("fc.", "classifier.")) for k in state)
        if has_fc and isinstance(fc, nn.Linear) and fc.out_features == num_classes:
            head.fc = fc
            head_loaded = True
    model = BlockNet(blocks, head)
    if state is not None and any(k.startswith("blocks.") for k in state):
        head_loaded = _load_strict(model, state, cfg.checkpoint)
    elif state is not None and native is None:  # no torchvision layout to load a plain state dict into
        raise ModelError(
            f"checkpoint '{cfg.checkpoint}' does not fit model '{cfg.name}': {_matching(model.state_dict(), state)}; "
            f"it is not a patrol-deploy model's state dict (no 'blocks.' keys), e.g. {sorted(state)[:3]}.",
            "set model.name to the checkpoint's architecture (resnet18, resnet50 and mobilenet_v2 also read "
            "torchvision state dicts), or pass a state dict saved from a patrol-deploy model (e.g. RUN/train/model.pt)")
    model.head_loaded = head_loaded  # type: ignore[assignment]  # False: the checkpoint had no usable head (re-ID head, other classes)
    return model


def _load_native(native: nn.Module, state: dict[str, Any], cfg: ModelConfig, num_classes: int) -> None:
    head_keys = ("fc.", "classifier.")
    own = native.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(head_keys)}
    missing = [k for k in own if not k.startswith(head_keys) and k not in body]
    unexpected = [k for k in body if k not in own]
    shape_bad = [k for k in body if k in own and own[k].shape != body[k].shape]
    if missing or unexpected or shape_bad:
        raise ModelError(
            f"checkpoint '{cfg.checkpoint}' does not fit model '{cfg.name}': {_matching(own, state)} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shape_bad[:3]}).",
            "set model.name to the checkpoint's architecture (and data.channels to its input channels)",
        )
    head = {k: v for k, v in state.items() if k.startswith(head_keys)}
    head_ok = all(k in own and own[k].shape == v.shape for k, v in head.items())
    native.load_state_dict({**body, **(head if head_ok else {})}, strict=False)


def _matching(own: dict[str, Any], state: dict[str, Any]) -> str:
    """`N of its M tensors match the model's K` (same name and shape)."""
    hits = sum(1 for k, v in state.items() if k in own and own[k].shape == v.shape)
    return f"{hits} of its {len(state)} tensors match the model's {len(own)}"


def _load_strict(model: nn.Module, state: dict[str, Any], origin: Path | None) -> bool:
    """Load a BlockNet state dict: the backbone must fit exactly; the head is loaded only if it fits too.

    Returns whether the head was loaded (False: another class count or task, and the model is fine-tuned).
    """
    own = model.state_dict()  # compare first: load_state_dict raises a bare RuntimeError on shape mismatches
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing = [k for k in own if not k.startswith("head.") and k not in body]
    unexpected = [k for k in body if k not in own]
    shape_bad = [k for k, v in body.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or shape_bad:
        raise ModelError(
            f"checkpoint '{origin}' does not fit the configured model: {_matching(own, state)} (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shape_bad[:3]}).",
            "check model.name, model.width, model.stages and data.channels; "
            "a pruned model is loaded from its run folder (patrol-deploy patrol --out DIR)",
        )
    head = {k: v for k, v in state.items() if k.startswith("head.")}
    own_head = {k: v for k, v in own.items() if k.startswith("head.")}
    head_fits = set(head) == set(own_head) and all(own_head[k].shape == v.shape for k, v in head.items())
    model.load_state_dict({**body, **(head if head_fits else {})}, strict=False)
    return head_fits


def load_checkpoint(path: str | Path | None) -> dict[str, Any]:
    """Read a state dict without unpickling code (`weights_only=True`)."""
    if path is None:
        raise ModelError("no checkpoint path given.", "set model.checkpoint")
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint '{p}' does not exist.", "set model.checkpoint to a state-dict file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise ModelError(
            f"checkpoint '{p}' cannot be loaded safely: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}.",
            "save a plain state dict (torch.save(model.state_dict(), path)); pickled code is refused",
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"checkpoint '{p}' is not a state dict of tensors.",
                         "save with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in obj.items()}
