"""report.json (schema version 1, see docs/report.md) and the self-contained report.html a person reads.

`validate_report` (results.py) checks the schema against the typed models and names the first key that is missing
or has the wrong type; `render_html` (report/html.py) draws one offline page with the pictures of
report/figures.py; `write_report` writes both files atomically. Imports matplotlib and Pillow only when rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.report.figures import image_strip
from patrol_deploy.report.html import CSP, render_html
from patrol_deploy.results import SCHEMA_VERSION, ReportError, plain, validate_report
from patrol_deploy.runfolder import write_json, write_text

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"

__all__ = ["CSP", "REPORT_HTML", "REPORT_JSON", "SCHEMA_VERSION", "ReportError", "image_strip", "plain",
           "render_html", "validate_report", "write_report"]


def write_report(folder: str | Path, report: dict[str, Any], originals: np.ndarray,
                 reconstructions: Mapping[str, Mapping[str, np.ndarray]]) -> list[Path]:
    """Validate, then write report.json and report.html atomically into `folder`; returns both paths."""
    page = render_html(report, originals, reconstructions)
    folder = Path(folder)
    # standard JSON that any parser reads: a number that could not be measured (NaN) is written as null
    return [write_json(folder / REPORT_JSON, plain(report, finite_only=True)), write_text(folder / REPORT_HTML, page)]
