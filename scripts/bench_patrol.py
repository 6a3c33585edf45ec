#!/usr/bin/env python3
"""PATROL speed targets, measured side by side in one run on this machine.

1. One PATROL training step (Lipschitz + adversarial + masks + distillation) vs one plain fine-tuning step of the
   same model and batch (target: ratio <= 2.5).
2. Building the dependency graph and pruning torchvision ResNet-50 (224x224) to half its edge MACs (target < 5 s).

    python scripts/bench_patrol.py [--batch 64] [--split layer3] [--steps 20]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F


def time_interleaved(a, b, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Mean seconds per call of a and b, alternating so that machine load hits both alike."""
    for f in (a, b, a, b):  # warm-up
        f()
    ta = tb = 0.0
    for _ in range(n):
        t = time.perf_counter()
        a()
        ta += time.perf_counter() - t
        t = time.perf_counter()
        b()
        tb += time.perf_counter() - t
    return ta / n, tb / n


def bench_step(batch: int, split: str, steps: int) -> None:
    from patrol_deploy.config import Config
    from patrol_deploy.models import create_model
    from patrol_deploy.patrol.masks import SoftMasks
    from patrol_deploy.patrol.objective import PatrolNet
    from patrol_deploy.patrol.trainer import surrogate_decoder, surrogate_step
    from patrol_deploy.split import cut

    torch.manual_seed(0)
    cfg = Config()
    x = torch.randn(batch, 1, 32, 32)
    y = torch.randint(0, 10, (batch,))
    plain = create_model(cfg.model, 10, 1).train()
    opt = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def plain_step() -> None:
        loss = F.cross_entropy(plain(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model = create_model(cfg.model, 10, 1).train()
    masks = SoftMasks(model, cut(model, split)[0])
    decoder = surrogate_decoder(model, split, x).train()
    teacher = copy.deepcopy(model).eval().requires_grad_(False)  # distillation is on by default
    net = PatrolNet(model, split, cfg.patrol, decoder, masks, teacher=teacher)
    opt2 = torch.optim.SGD(list(model.parameters()), lr=0.01, momentum=0.9)
    opt_adv = torch.optim.Adam(decoder.parameters(), lr=cfg.patrol.adversarial.lr)
    extra = cfg.patrol.adversarial.attacker_steps - 1  # surrogate-only updates after each defender update

    def patrol_step() -> None:
        losses = net(x, y)
        opt2.zero_grad()
        opt_adv.zero_grad()
        losses["total"].backward()
        opt2.step()
        opt_adv.step()
        for _ in range(extra):
            surrogate_step(decoder, opt_adv, losses["features"], x)

    t_plain, t_patrol = time_interleaved(plain_step, patrol_step, steps)
    print(f"step time, small_resnet, batch {batch}, split {split}, {torch.get_num_threads()} threads, "
          f"{extra + 1} surrogate update(s) per step:")
    print(f"  plain fine-tuning step : {t_plain * 1000:8.1f} ms")
    print(f"  PATROL step            : {t_patrol * 1000:8.1f} ms")
    print(f"  ratio PATROL / plain   : {t_patrol / t_plain:8.2f}   (target <= 2.5)")


def bench_prune_resnet50() -> None:
    from patrol_deploy.budget import edge_cost
    from patrol_deploy.config import BudgetConfig, ModelConfig
    from patrol_deploy.models import create_model
    from patrol_deploy.patrol.prune import EdgePruner
    from patrol_deploy.split import cut

    model = create_model(ModelConfig(name="resnet50"), 1000, 3).train()
    shape = (3, 224, 224)
    split = "layer3"
    full = edge_cost(cut(model, split)[0], split, shape, BudgetConfig(edge_macs=1e18))
    budget = BudgetConfig(edge_macs=full.edge_macs / 2)
    t = time.perf_counter()
    pruner = EdgePruner(model, split, None, shape, keep_split_width=True)
    t_graph = time.perf_counter() - t
    result = pruner.prune_to_budget(budget, step_ratio=0.25, max_rounds=20)
    t_total = time.perf_counter() - t
    print(f"ResNet-50 at 224x224, edge up to {split}: {full.edge_macs / 1e9:.2f} GMACs -> "
          f"{result.after.edge_macs / 1e9:.2f} GMACs ({result.rounds} rounds, fits: {result.after.fits})")
    print(f"  dependency graph build : {t_graph:8.2f} s")
    print(f"  graph + prune to half  : {t_total:8.2f} s   (target < 5 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--split", default="layer3")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-step", action="store_true", help="only the ResNet-50 pruning benchmark")
    args = ap.parse_args()
    if not args.skip_step:
        bench_step(args.batch, args.split, args.steps)
    bench_prune_resnet50()


if __name__ == "__main__":
    main()
