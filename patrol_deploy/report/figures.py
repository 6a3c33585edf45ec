"""The pictures of report.html: reconstruction strips and the trade-off, loss-curve and mask-scale plots, each as a
PNG data URI. Imports matplotlib and Pillow only when drawing."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from patrol_deploy.lazy import require
from patrol_deploy.results import ReportError

GRID_IMAGES = 8
UNRECOGNIZABLE_SSIM = 0.3  # He et al. (ACSAC 2019)
CURVE_AXES = ("epoch", "step", "shadow_epoch")  # loss_curve keys that hold the x axis, not a loss


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# --- pictures --------------------------------------------------------------------------------------------------------

def check_images(arr: Any, what: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim != 4 or a.shape[1] not in (1, 3) or len(a) == 0:
        raise ReportError(f"{what}: expected images shaped N,C,H,W with C = 1 or 3, got {a.shape}.",
                          "pass de-normalized images in [0, 1] as float32 N,C,H,W")
    return np.nan_to_num(a, nan=0.0).clip(0.0, 1.0)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png(array: np.ndarray) -> str:
    """A uint8 H,W or H,W,3 array as a PNG data URI."""
    image_mod = require("PIL.Image", "the HTML report")
    buf = io.BytesIO()
    image_mod.fromarray(array).save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def image_strip(images: np.ndarray, gap: int = 2, min_tile: int = 64) -> np.ndarray:
    """N,C,H,W floats in [0,1] side by side as one uint8 picture, enlarged (nearest) to at least `min_tile` px."""
    n, c, h, w = images.shape
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = (images * 255.0).round().astype(np.uint8).repeat(scale, axis=2).repeat(scale, axis=3)
    th, tw = h * scale, w * scale
    strip = np.full((c, th, n * tw + (n - 1) * gap), 255, np.uint8)
    for i in range(n):
        strip[:, :, i * (tw + gap): i * (tw + gap) + tw] = tiles[i]
    return strip[0] if c == 1 else strip.transpose(1, 2, 0)


def figure_png(fig: Any) -> str:
    require("matplotlib", "the HTML report plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return data_uri(buf.getvalue())


def finite(v: Any) -> float | None:
    return float(v) if is_number(v) and math.isfinite(v) else None


def tradeoff_points(report: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(label, utility, worst SSIM) per variant, and for the quantized edge."""
    points = [(name, v["utility"], v["privacy"]["worst_ssim"]) for name, v in report["variants"].items()]
    q = report.get("quantized")
    if q:
        points.append((f"quantized ({q['mode']})", q["utility"], q["privacy"]["worst_ssim"]))
    return points


def tradeoff_plot(report: dict[str, Any]) -> str:
    """Worst-case SSIM against utility, one labelled point per variant (plus the quantized edge)."""
    require("matplotlib", "the HTML report plots")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for i, (name, utility, ssim) in enumerate(tradeoff_points(report)):
        x, y = finite(utility), finite(ssim)
        if x is None or y is None:
            continue
        ax.scatter([x], [y], s=60, color=f"C{i % 10}", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
    ax.axhline(UNRECOGNIZABLE_SSIM, color="grey", linestyle="--", linewidth=1)
    ax.text(0.01, UNRECOGNIZABLE_SSIM, " SSIM 0.3: unrecognizable (He et al.)", transform=ax.get_yaxis_transform(),
            va="bottom", fontsize=8, color="grey")
    ax.set_xlabel(f"utility: {report['utility_metric']} (%)  (higher is better)")
    ax.set_ylabel("worst-case SSIM of the attacks (lower is more private)")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def loss_plot(report: dict[str, Any], attack: str = "blackbox") -> str | None:
    """Each variant's black-box decoder loss per epoch (train dashed, validation solid); None without curves."""
    require("matplotlib", "the HTML report plots")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    lows: list[float] = []
    for i, (name, v) in enumerate(report["variants"].items()):
        curve = v["privacy"]["attacks"].get(attack, {}).get("loss_curve")
        series = {"loss": curve} if isinstance(curve, list) else dict(curve or {})
        x = next((series.pop(k) for k in CURVE_AXES if k in series), None)
        for key, ys in series.items():
            if not ys:
                continue
            xs = x if x is not None and len(x) == len(ys) else list(range(1, len(ys) + 1))
            style = "--" if key == "train" else "-"
            ax.plot(xs, ys, style, color=f"C{i % 10}", label=f"{name} ({key})")
            lows.append(min(ys))
    if not lows:
        return None
    if min(lows) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("decoder MSE on normalized images")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def mask_scale_plot(report: dict[str, Any]) -> str | None:
    """A bar histogram of PATROL's normalized mask scales before pruning; None without `mask_scales`."""
    scales = report.get("mask_scales")
    if not scales:
        return None
    require("matplotlib", "the HTML report plots")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    bins = scales["bins"]
    ax.bar(bins[:-1], scales["counts"], width=np.diff(bins), align="edge", color="C0", edgecolor="white")
    ax.axvline(0.1, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("|mask x gamma| / layer mean |gamma| at start")
    ax.set_ylabel("edge channels")
    share = finite(scales["near_zero_share"])
    ax.set_title(f"{share * 100:.0f} % of {scales['channels']} channels below 0.1" if share is not None
                 else f"{scales['channels']} channels", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return figure_png(fig)
