"""evaluation/report.html: one self-contained page (figures embedded) a person opens in the MLflow UI's
artifact viewer to see what was measured and why the gate decided as it did."""

import datetime
from pathlib import Path

import jinja2
import numpy as np

from results import Evaluation
from slices import MIN_SLICE_ROWS

TEMPLATE = Path(__file__).resolve().parent / "report_template.html"


def confusion_rows(matrix: np.ndarray) -> list[list[tuple[int, float]]]:
    """(count, share of its true class) for each cell, row by row: the table's shading."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    return [
        [(int(count), float(share)) for count, share in zip(counts, row_shares, strict=True)]
        for counts, row_shares in zip(matrix, shares, strict=True)
    ]


def render(
    evaluation: Evaluation, run_id: str, figures: list[tuple[str, str]], slice_figure: str = ""
) -> str:
    """The report of one evaluation from report_template.html; `figures` are (title, data: URI) pairs,
    `slice_figure` the data: URI shown under the slice table. Every value is escaped (texts, class names
    and slice values come from the user's data)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing figure is a bug, not an empty cell
    )
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return environment.get_template(TEMPLATE.name).render(
        e=evaluation,
        run_id=run_id,
        figures=figures,
        confusion=confusion_rows(evaluation.challenger.confusion),
        generated=generated,
        slice_figure=slice_figure,
        min_slice_rows=MIN_SLICE_ROWS,
    )
