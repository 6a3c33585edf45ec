"""Hardware targets (`deploy.target`) and the channel counts a deployed edge needs on each (no torch import).

ModelOpt 0.47's ONNX INT8 PTQ (`graph_utils.find_nodes_from_convs_to_exclude`)
quantizes a convolution with 16 or more channels on both sides, or (group 1,
square kernel) with a multiple of 8 on one side and 16 or more on the other,
or one that reads the network input; everything else stays in float
(`patrol_deploy.deployment.quantize.int8_conv_rule`). So pruning keeps channel counts
that are multiples of 8 (`patrol.prune.round_to`) and 16 channels on one side
of every convolution INT8 covered before pruning
(`patrol.prune.deploy_min_channels`): with round_to a multiple of 8, every
convolution INT8 covered before pruning stays covered. The torch route (and
QAT) has no channel rule of its own; the same floors keep an edge's channel
counts the same whichever route quantizes it.
"""

from __future__ import annotations

from dataclasses import dataclass

INT8_MIN_CHANNELS = 16  # ModelOpt's INT8 conv rule: a side with >= 16 channels (module docstring)


@dataclass(frozen=True)
class Target:
    """What a target sets; docs/deploy.md says why, per target."""

    name: str
    round_to: int  # prune to multiples of this many channels
    min_channels: int  # a convolution INT8 covered keeps at least this many channels on one side
    opset: int  # ONNX opset of the exported edge that this target's TensorRT / runtime parses
    route: str  # ModelOpt route whose Q/DQ this target's runtime takes: "onnx" (opset >= 19) or "torch" (opset 17)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("jetson-orin", 8, INT8_MIN_CHANNELS, 19, "onnx"),  # TensorRT 10.3 (JetPack 6) or 11 (JetPack 7)
    Target("jetson-xavier", 8, INT8_MIN_CHANNELS, 17, "torch"),  # TensorRT 8.5 (JetPack 5): ONNX up to opset 17
    Target("x86-cpu", 8, INT8_MIN_CHANNELS, 19, "onnx"),  # ONNX Runtime on the CPU
)}
