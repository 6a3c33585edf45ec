"""The model the attack benchmarks run against: a model folder (--model) or a baseline trained briefly here.

Shared by bench_rmle.py and bench_attack_strength.py (imported from the scripts folder).
"""

from __future__ import annotations

import argparse
import time

import torch

from patrol_deploy.config import DEFAULT_CONFIG, Config, DataConfig, load_config
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.models import BlockNet, create_model
from patrol_deploy.training import evaluate, fit


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder (model.pt + model.json); default: train a baseline here")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the baseline trained without --model")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine, 2 threads oversubscribe and "
                        "run several times slower; use 2 on a dedicated one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override on the bundled default, e.g. attacks.blackbox.epochs=40")


def bench_model(args: argparse.Namespace) -> tuple[Config, DataBundle, BlockNet]:
    """The bundled default config (with overrides), its data, and the model to attack."""
    torch.set_num_threads(args.threads)
    cfg = load_config(DEFAULT_CONFIG, args.overrides)
    if args.model:
        model, meta = load_model_dir(args.model)
        if "data" in meta.extra:
            cfg.data = DataConfig.model_validate(meta.extra["data"])
        bundle = load_data(cfg.data, cfg.seed)
        print(f"model: {args.model} ({meta.model_config.name}, split {meta.split})")
        return cfg, bundle, model
    bundle = load_data(cfg.data, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, bundle.num_classes, bundle.channels)
    started = time.perf_counter()
    fit(model, bundle, cfg.train, cfg.seed, epochs=args.epochs, desc="baseline")
    accuracy = evaluate(model.eval(), bundle, cfg.model.task)["accuracy"]
    print(f"model: {cfg.model.name} trained {args.epochs} epochs on {len(bundle.train)} {cfg.data.source} images "
          f"in {time.perf_counter() - started:.0f} s, test accuracy {accuracy:.1f}%")
    return cfg, bundle, model
