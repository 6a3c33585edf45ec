"""Quantization-aware fine-tuning (QAT) of the PATROL edge with ModelOpt's torch route.

`mtq.quantize` inserts INT8 fake quantizers into the edge of the float PATROL model (max calibration on the
calibration images, per-channel weight scales). Then the edge is fine-tuned for `quantize.qat.epochs` with the
PATROL objective (Lipschitz and adversarial terms as configured) plus distillation from the float PATROL model's
logits, with the cloud frozen (the float cloud is what ships beside the INT8 edge), and exported as Q/DQ ONNX at
`export.opset` (17 for TensorRT 8.x, 19 and up otherwise). Used by `quantize --method qat` and by `auto` when
post-training quantization fails the gate.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patrol_deploy.config import Config
from patrol_deploy.deployment.export import EDGE_INPUT, EDGE_OUTPUT, to_onnx
from patrol_deploy.distributed import DistContext
from patrol_deploy.errors import DataError, ModelError
from patrol_deploy.lazy import require
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.progress import status
from patrol_deploy.relocate import check_data_root
from patrol_deploy.split import cut

QAT_MIN_OPSET = 13  # QuantizeLinear / DequantizeLinear with per-channel axis


def training_config(cfg: Config) -> dict[str, Any]:
    """What decides a QAT result besides the float model and the calibration images (for the stage's cache key;
    where the data lies and which device trains are not: a moved run folder reuses its QAT edge)."""
    return {"seed": cfg.seed, "data": cfg.data.model_dump(mode="json", exclude={"root"}),
            "train": cfg.train.model_dump(mode="json", exclude={"device"}),
            "patrol": cfg.patrol.model_dump(mode="json"), "qat": cfg.quantize.qat.model_dump(mode="json"),
            "opset": cfg.export.opset}


def qat_int8(model_dir: Path, calib: np.ndarray, cfg: Config, dynamic_batch: bool) -> tuple[Any, dict[str, Any]]:
    """Insert quantizers into the edge of `model_dir`'s model, fine-tune with the PATROL objective and distillation
    from the float model, and export the edge as Q/DQ ONNX; returns the ONNX model and how it was made."""
    from patrol_deploy.deployment.quantize import insert_quantizers, modelopt_tool
    from patrol_deploy.modelio import Subject
    from patrol_deploy.patrol.stage import surrogate_at
    from patrol_deploy.patrol.trainer import train_patrol, warm_up_surrogate

    require("modelopt.torch.quantization", "quantization-aware fine-tuning (QAT)")
    if cfg.export.opset < QAT_MIN_OPSET:
        raise ModelError(f"QAT exports Q/DQ ONNX, which needs opset >= {QAT_MIN_OPSET}; export.opset is "
                         f"{cfg.export.opset}.", "set export.opset to 17 (TensorRT 8.x) or 19 (TensorRT 10/11)")
    check_data_root(cfg.data.model_dump(mode="json"))
    model, meta = load_model_dir(model_dir)
    bundle = Subject(cfg, model, meta, model_dir).bundle()  # the data, checked against the model's input
    if len(bundle.train) == 0:
        raise DataError(f"QAT needs training images, but the training split of '{cfg.data.source}' is empty.",
                        "point data.root (--data-root) at the dataset the model was trained on")
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    edge = cut(model, meta.split)[0]
    x = torch.from_numpy(calib)
    insert_quantizers(edge, x, f"ModelOpt torch quantization of {model_dir}", "use --method ptq")  # model's blocks
    quantizers = sum(type(m).__name__ == "TensorQuantizer" for m in model.modules())
    if quantizers == 0:
        raise ModelError(f"ModelOpt inserted no quantizer into the edge of {model_dir}.", "use --method ptq")
    qat = cfg.quantize.qat
    distill = cfg.patrol.distill.model_copy(update={"enabled": True, "weight": cfg.patrol.distill.weight or 1.0})
    tuned = cfg.model_copy(update={"patrol": cfg.patrol.model_copy(update={"lr": qat.lr, "distill": distill})})
    decoder = surrogate_at(model, meta.split, bundle, tuned)
    status(f"quantize: QAT, {qat.epochs} epoch(s) of the PATROL objective with distillation from the float model")
    model.train()
    if decoder is not None:
        warm_up_surrogate(model, meta.split, decoder, bundle, tuned, DistContext())
    # the cloud is frozen: the edge must keep working with the float cloud that ships beside it
    history = train_patrol(model, meta.split, bundle, tuned, qat.epochs, None, decoder, desc="QAT", teacher=teacher,
                           freeze_cloud=True)
    model.eval().cpu()
    qdq = to_onnx(edge, x[:1], cfg.export.opset, dynamic_batch, EDGE_INPUT, EDGE_OUTPUT)
    return qdq, {"tool": modelopt_tool(), "calibration_method": "max", "config": "INT8_DEFAULT_CFG",
                 "qat": qat.model_dump(mode="json"), "api": "modelopt.torch.quantization.quantize + fine-tuning",
                 "model_dir": str(model_dir),
                 "quantizers": quantizers, "history": history.epochs}
