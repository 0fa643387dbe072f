"""monitor/report.html: the verdict, a table of the scores and, per feature, the reference's and the
traffic's distributions side by side (self-contained: figures embedded as PNG); with labels that came back,
a "versions on live traffic" section."""

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sentclf.contract import MonitorVerdict  # noqa: E402

from compare import FeatureScore  # noqa: E402


def figure_png(score: FeatureScore) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(score.bins))
    ax.bar(x - 0.2, score.reference, 0.4, label=f"reference ({score.reference_kind})", color="#4c72b0")
    ax.bar(x + 0.2, score.current, 0.4, label="served traffic", color="#dd8452")
    ax.set_xticks(x, score.bins, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_title(f"{score.name}: {score.description}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render(scores: list[FeatureScore], verdict: MonitorVerdict, context: dict, live_html: str = "") -> str:
    e = html.escape
    threshold = verdict.threshold
    rows = "".join(
        f"<tr><td>{e(s.name)}</td><td>{e(s.reference_kind)}</td><td>{s.psi:.3f}</td>"
        f"<td>{'' if s.ks is None else f'{s.ks:.3f}'}</td>"
        f"<td>{'' if s.reference_mean is None else f'{s.reference_mean:.3g}'}</td>"
        f"<td>{'' if s.current_mean is None else f'{s.current_mean:.3g}'}</td>"
        f"<td>{'DRIFT' if s.drifted(threshold) else 'ok'}</td></tr>"
        for s in scores
    )
    figures = "".join(
        f'<h3>{e(s.name)}</h3><img alt="{e(s.name)}" src="data:image/png;base64,{figure_png(s)}">'
        for s in scores
    )
    facts = "".join(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in context.items())
    headline = (
        f"drift in {', '.join(verdict.features)}" if verdict.drift else "no drift"
    ) + f" (threshold {threshold} on PSI and KS)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Served traffic: {e(headline)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head><body>
<h1>Served traffic against the model's data: {e(headline)}</h1><ul>{facts}</ul>
<table><tr><th>feature</th><th>reference</th><th>PSI</th><th>KS</th><th>reference mean</th>
<th>traffic mean</th><th>verdict</th></tr>{rows}</table>{live_html}{figures}</body></html>"""


def _interval(value) -> str:
    return "" if value is None else f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"


def live_section(evidence, feedback: str) -> str:
    """Per version: what it answered, its live accuracy, MCC and macro-F1 (95% bootstrap intervals) on the
    labelled sentences; per shadow pair: agreement and the paired ΔMCC; then what was refused and why."""
    e = html.escape
    rows = "".join(
        f"<tr><td>v{e(f.version)}</td><td>{f.requests}</td><td>{f.served}</td><td>{f.shadow}</td>"
        f"<td>{f.labelled}</td><td>{_interval(f.accuracy)}</td><td>{_interval(f.mcc)}</td>"
        f"<td>{_interval(f.f1_macro)}</td></tr>"
        for f in evidence.versions.values()
    )
    pairs = "".join(
        f"<tr><td>v{e(p.challenger)} against v{e(p.champion)}</td><td>{p.both}</td>"
        f"<td>{'' if p.agreement is None else f'{p.agreement:.1%}'}</td><td>{p.labelled}</td>"
        f"<td>{_interval(p.comparison.delta_mcc) if p.comparison else ''}</td>"
        f"<td>{f'{p.comparison.share_better:.1%}' if p.comparison else ''}</td></tr>"
        for p in evidence.pairs
    )
    pair_table = (
        "<h3>Shadow pairs: the same sentences answered by both versions</h3><table><tr><th>pair</th>"
        "<th>sentences both answered</th><th>agreement</th><th>labelled</th><th>ΔMCC [95%]</th>"
        f"<th>resamples where the challenger is better</th></tr>{pairs}</table>"
        if pairs
        else "<p>No sentence was answered by two versions (no shadow traffic): no paired comparison.</p>"
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in evidence.notes())
    problems = "".join(f"<li>{e(p)}</li>" for p in evidence.feedback.problems)
    return f"""<h2>Versions on live traffic</h2>
<p>Labels from {e(feedback)} joined with the captured answers by request id and sentence position.
Intervals are 95% bootstrap intervals over the labelled sentences.</p>
<table><tr><th>version</th><th>requests</th><th>sentences served</th><th>sentences in shadow</th>
<th>labelled</th><th>accuracy [95%]</th><th>MCC [95%]</th><th>macro-F1 [95%]</th></tr>{rows}</table>
{pair_table}<ul>{notes}</ul>{f"<h3>Refused labels</h3><ul>{problems}</ul>" if problems else ""}"""
