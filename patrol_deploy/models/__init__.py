"""Models as an ordered list of named blocks plus a head, so any block boundary is a split point.

`create_model(cfg, num_classes, in_channels)` builds a registered architecture;
`load_checkpoint` reads a user's state dict with `torch.load(weights_only=True)`.
"""

from patrol_deploy.models.blocknet import BlockNet, Head, ReIDHead
from patrol_deploy.models.registry import MODELS, create_model, load_checkpoint

__all__ = ["MODELS", "BlockNet", "Head", "ReIDHead", "create_model", "load_checkpoint"]
