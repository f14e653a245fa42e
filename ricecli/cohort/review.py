"""review.html: one self-contained page (base64 PNG thumbnails of a middle slice) showing, per
patient, the chosen series, every other series with its type and why it was not used, and the
warnings, so that a reader checks 100 cases in minutes."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ricecli.cohort.cases import Cohort, PatientReview
from ricecli.cohort.index import quiet_pydicom
from ricecli.cohort.series import Series
from ricecli.io.base import READ_ERRORS, read_header

THUMB = 160
STYLE = ("body{font:14px sans-serif;margin:1.5em;max-width:1200px}"
         "h2{border-top:1px solid #999;padding-top:.6em}"
         "table{border-collapse:collapse;margin:.4em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top;text-align:left}"
         ".warn{color:#a40}.skip{color:#777}figure{display:inline-block;margin:0 8px 0 0}"
         "figcaption{font-size:11px}")


def thumbnail(path: Path) -> str:
    """A data: URI of a PNG of one slice (1-99 percentile window), or '' if it cannot be read."""
    try:
        with quiet_pydicom():
            ds = read_header(path, pixels=True)
            pixels = np.asarray(ds.pixel_array, np.float32)
    except (*READ_ERRORS, RuntimeError, NotImplementedError):
        return ""
    if pixels.ndim == 3:
        pixels = pixels[pixels.shape[0] // 2]
    lo, hi = np.percentile(pixels, [1, 99]) if pixels.size else (0.0, 1.0)
    scaled = np.clip((pixels - lo) / max(float(hi - lo), 1e-6) * 255, 0, 255).astype(np.uint8)
    image = Image.fromarray(scaled)
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(root: Path, series: Series, caption: str) -> str:
    uri = thumbnail(root / series.files[len(series.files) // 2])
    img = f'<img src="{uri}" alt="{html.escape(series.label())}">' if uri else "(no preview)"
    return (f"<figure>{img}<figcaption>{html.escape(caption)}: "
            f"{html.escape(series.label())}</figcaption></figure>")


def _patient(root: Path, cohort: Cohort, review: PatientReview) -> list[str]:
    out = [f"<h2 id='{html.escape(review.patient_id)}'>{html.escape(review.patient_id)}: "
           f"{html.escape(review.outcome)}</h2>"]
    for case in (c for c in cohort.cases if c.patient_id == review.patient_id):
        figures = [_figure(root, v.t1c, name) for name, v in
                   (("post_op", case.post_op), ("event", case.event)) if v.t1c is not None]
        if case.dose_frame is not None:
            figures.append(_figure(root, case.dose_frame, "dose frame"))
        out.append(f"<div class='case'><b>{html.escape(case.case_id)}</b> label "
                   f"{html.escape(case.label or '-')}, {case.split}; dose: "
                   f"{html.escape(case.dose.reason)}; transform: "
                   f"{'REG' if case.transform is not None else 'registered by prepare'}"
                   f"<br>{''.join(figures)}</div>")
    out += [f"<p class='warn'>warning: {html.escape(w)}</p>" for w in review.warnings]
    rows = ["<tr><th>study</th><th>series</th><th>modality</th><th>type</th><th>why</th>"
            "<th>choice</th></tr>"]
    for series, typing, note in review.series:
        kind = typing.code or typing.kind
        rows.append(f"<tr class='{'' if note == 'chosen' else 'skip'}'>"
                    f"<td>{html.escape(series.study_uid[-10:])}</td>"
                    f"<td>{html.escape(series.label())}</td><td>{series.modality}</td>"
                    f"<td>{html.escape(kind)}</td><td>{html.escape(typing.reason)}</td>"
                    f"<td>{html.escape(note)}</td></tr>")
    return [*out, f"<table>{''.join(rows)}</table>"]


def review_html(root: Path, cohort: Cohort) -> str:
    """The whole review page for a cohort whose files lie under `root`."""
    counts: dict[str, int] = {}
    for skip in cohort.skipped:
        counts[skip.code] = counts.get(skip.code, 0) + 1
    summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
    body = [f"<h1>ricecli cohort: {len(cohort.cases)} cases, {len(cohort.patients)} patients"
            "</h1>", f"<p>source: {html.escape(str(root))}</p>",
            f"<p>not used (skipped.csv): {html.escape(summary or 'nothing')}</p>"]
    for review in cohort.patients:
        body += _patient(root, cohort, review)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ricecli cohort review"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
