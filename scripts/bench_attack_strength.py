#!/usr/bin/env python3
"""Attack strength on the bundled default: the black-box inverse network against every undefended split.

    python scripts/bench_attack_strength.py [--model RUN/train] [--attacks blackbox] [--set KEY=VALUE]

Target: SSIM >= 0.6 after the first block (`stem`). A lower number means the
attack is too weak (fix the attack, not the threshold). Deeper splits show
how much harder inversion gets with depth, which is the lever PATROL's
pruning buys.
"""

from __future__ import annotations

import argparse
import math

from _bench_model import add_model_args, bench_model

from patrol_deploy.attacks import AttackContext, TorchEdgeRunner, run_attacks
from patrol_deploy.budget import count_macs_params
from patrol_deploy.progress import set_quiet
from patrol_deploy.split import cut, split_points

TARGET_SSIM = 0.6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--attacks", default="blackbox", help="comma-separated attacks (default: blackbox)")
    args = parser.parse_args()
    set_quiet(True)
    cfg, bundle, model = bench_model(args)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()]
    shape = (bundle.channels, bundle.image_size, bundle.image_size)
    print(f"{len(bundle.aux)} auxiliary images, {min(cfg.attacks.eval_images, len(bundle.test))} evaluation images")
    print(f"{'split':<8} {'features':>10} {'edge MACs':>12} {'attack':<11} {'SSIM':>13} {'PSNR dB':>8} "
          f"{'time s':>7}  notes")
    stem_ssim = float("nan")
    first = split_points(model)[0]
    for split in split_points(model):
        edge, cloud = cut(model, split)
        macs, _, feat = count_macs_params(edge, shape)
        ctx = AttackContext.from_test_split(TorchEdgeRunner(edge), cloud, bundle, cfg.attacks, cfg.seed)
        suite = run_attacks(names, ctx)
        for name, r in suite.results.items():
            note = r.error or " ".join(r.notes)
            print(f"{split:<8} {'x'.join(map(str, feat)):>10} {macs:>12,} {name:<11} {r.scores.ssim_mean:>6.3f} ± "
                  f"{r.scores.ssim_std:.3f} {r.scores.psnr_mean:>8.2f} {r.seconds:>7.1f}  {note}", flush=True)
        if split == first and "blackbox" in suite.results:
            stem_ssim = suite.results["blackbox"].scores.ssim_mean
    if not math.isnan(stem_ssim):
        verdict = "PASS" if stem_ssim >= TARGET_SSIM else "FAIL (the attack is too weak)"
        print(f"black-box SSIM after the first block: {stem_ssim:.3f} (target >= {TARGET_SSIM}): {verdict}")


if __name__ == "__main__":
    main()
