"""evaluation/report.html: one self-contained page (figures embedded) a person opens in the MLflow UI's
artifact viewer to see what was measured and why the gate decided as it did."""

import datetime
from pathlib import Path

import jinja2

TEMPLATE = Path(__file__).resolve().parent / "report_template.html"


def render(**context: object) -> str:
    """The report from report_template.html; every value is escaped (texts come from the user's data)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing figure is a bug, not an empty cell
    )
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return environment.get_template(TEMPLATE.name).render(generated=generated, **context)
