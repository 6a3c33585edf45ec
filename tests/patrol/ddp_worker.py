"""Run under torchrun: plain training and PATROL training with DDP (gloo), then dump this rank's weights."""

from __future__ import annotations

import sys

import torch

from patrol_deploy.config import Config
from patrol_deploy.data import load_data
from patrol_deploy.distributed import init_distributed
from patrol_deploy.models import create_model
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.trainer import surrogate_decoder, train_patrol
from patrol_deploy.split import cut
from patrol_deploy.training import fit


def main(out: str) -> None:
    torch.set_num_threads(1)
    cfg = Config.model_validate({"data": {"source": "digits", "image_size": 16, "limit": 400},
                                 "model": {"width": 4}, "train": {"batch_size": 32}})
    ctx = init_distributed("cpu")
    assert ctx.world_size == 2
    bundle = load_data(cfg.data, cfg.seed)
    torch.manual_seed(ctx.rank)  # deliberately different initialisation per rank: DDP must broadcast rank 0's
    model = create_model(cfg.model, bundle.num_classes, bundle.channels)
    fit(model, bundle, cfg.train, seed=0, epochs=1, ctx=ctx)
    masks = SoftMasks(model, cut(model, "layer2")[0])
    torch.manual_seed(0)
    decoder = surrogate_decoder(model, "layer2", bundle.train.tensors(slice(0, 1))[0])
    torch.manual_seed(100 + ctx.rank)  # different noise draws per rank, as in real data-parallel training
    train_patrol(model, "layer2", bundle, cfg, 1, masks, decoder, ctx)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    torch.save(state, f"{out}/rank{ctx.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
