"""The report's three forms: one self-contained HTML page (plots embedded as data: URIs, so MLflow's artifact
viewer shows it whole), JSON for machines, and the terminal's concise lines."""

from __future__ import annotations

import base64
import html
import json
import math

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:nth-child(2),td:nth-child(3){text-align:left}tr.tie{background:#eef6ee}
.verdict{font-size:15px;background:#f6f6f0;padding:4px 10px;border-left:4px solid #4c72b0}
.method{color:#666;font-size:12px}img{max-width:100%}"""


def _clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def as_json(data, sections) -> str:
    """report.json: the sweep's facts and each section's data, NaN and infinities as null."""
    return json.dumps(_clean({"sweep": data.name, "parent_run_id": data.parent_id, "metric": data.metric,
                              "mode": data.mode, "seeds": data.seeds, "configurations": len(data.configs),
                              **{s.key: s.data for s in sections}}), indent=1)


def as_html(data, sections, banner: list[str] | None = None) -> str:
    """One page: the verdict first (report.build puts it first), then what the sweep was, then each section;
    `banner` (a partial report's lines) above them all."""
    about = (f"<p>{len(data.configs)} configurations × seeds {data.seeds}; metric {html.escape(data.metric)} "
             f"({data.mode}). Built from the sweep's MLflow runs.</p>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>danlu report: {html.escape(data.name)}</title>"
             f"<style>{STYLE}</style></head><body><h1>danlu report: {html.escape(data.name)}</h1>"]
    parts += [f"<p style='background:#fde2e1;border:1px solid #c0392b;padding:8px'><b>{html.escape(line)}</b></p>"
              for line in banner or []]
    for s in sections:
        body = s.html
        for name, content in s.plots.items():
            body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{base64.b64encode(content).decode()}"')
        parts.append(body + about if s.key == "verdict" else f"<h2 id='{s.key}'>{html.escape(s.title)}</h2>{body}")
    parts.append("</body></html>")
    return "".join(parts)


def as_text(data, sections) -> list[str]:
    """The report for the terminal: a header line, then each section's lines."""
    lines = [f"danlu: report for {data.name}: {data.metric} ({data.mode}), mean over seeds {data.seeds}"]
    for s in sections:
        lines += s.text
    return lines
