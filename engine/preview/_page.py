"""The preview page: one HTML document, no files beside it. The figures as of the request are
embedded, so the page is complete when it loads; an EventSource then updates them live."""

from __future__ import annotations

import html
import json
import math
from typing import Any

__all__ = ["finite", "page"]


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither; a render's loss may be NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def page(figures: dict[str, Any]) -> str:
    """The page with ``figures`` (a PreviewSnapshot's) filled in."""
    data = json.dumps(finite(figures)).replace("<", "\\u003c")  # nothing in it can close the script
    return _PAGE.replace("__TITLE__", html.escape(str(figures.get("title", "styleforge")))).replace("__DATA__", data)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__ preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #16181d; color: #e6e6e6; }
main { display: flex; gap: 20px; padding: 16px; flex-wrap: wrap; }
#picture { flex: 0 0 min(48%, 512px); }
#picture img { display: block; width: 100%; border-radius: 4px; background: #222; }
#side { flex: 1 1 260px; min-width: 240px; }
h1 { font-size: 16px; margin: 0 0 8px; font-weight: 600; }
#status { color: #9ad; margin-bottom: 8px; }
table { border-collapse: collapse; width: 100%; }
td { padding: 2px 6px; border-bottom: 1px solid #2a2d35; }
td:first-child { color: #999; width: 45%; }
svg { width: 100%; height: 140px; background: #1d2027; border-radius: 4px; }
.caption { color: #999; margin-top: 10px; font-size: 12px; }
.empty { color: #777; padding: 40px; border: 1px dashed #444; }
</style></head>
<body><main>
<div id="picture"><img id="image" alt="the current image" hidden>
<div id="noimage" class="empty">no picture yet</div></div>
<div id="side"><h1 id="title"></h1><div id="status"></div>
<table id="figures"></table>
<div class="caption">loss, log scale</div>
<svg id="curve" viewBox="0 0 300 150" preserveAspectRatio="none" aria-label="loss curve"></svg>
</div></main>
<script>
const initial = __DATA__;
const rows = [
  ["level", f => f.level != null ? f.level + " of " + f.levels : null],
  ["iteration", f => f.iteration != null ? f.iteration + " of " + f.iterations : null],
  ["loss", f => f.loss != null ? f.loss.toPrecision(4) : null],
  ["size", f => f.size ? f.size[0] + " x " + f.size[1] : null],
  ["elapsed", f => f.elapsed != null ? duration(f.elapsed) : null],
  ["time left", f => f.eta != null ? "about " + duration(f.eta) : null],
  ["peak memory", f => f.peak_memory != null ? (f.peak_memory / 2 ** 30).toFixed(2) + " GiB" : null],
  ["frames", f => f.frames ? f.frames.done + " of " + f.frames.total + " done, " + f.frames.failed + " failed"
      + (f.frames.resumed ? ", " + f.frames.resumed + " resumed" : "") : null],
  ["jobs", f => f.jobs ? f.jobs.done + " done, " + f.jobs.skipped + " skipped, " + f.jobs.failed
      + " failed of " + f.jobs.total : null],
  ["job", f => f.job],
];
function duration(s) {
  if (s < 120) return s.toFixed(0) + " s";
  return s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}
function curve(points) {
  const svg = document.getElementById("curve");
  const good = points.filter(p => p[1] > 0);
  if (good.length < 2) { svg.innerHTML = ""; return; }
  const xs = good.map(p => p[0]), ys = good.map(p => Math.log10(p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = x => 4 + 292 * (x - x0) / Math.max(x1 - x0, 1e-9);
  const sy = y => 144 - 136 * (y - y0) / Math.max(y1 - y0, 1e-9);
  const path = good.map((p, i) => sx(xs[i]).toFixed(1) + "," + sy(ys[i]).toFixed(1)).join(" ");
  svg.innerHTML = '<polyline fill="none" stroke="#6cf" stroke-width="1.5" vector-effect="non-scaling-stroke" points="'
    + path + '"/>';
}
function show(f) {
  document.getElementById("title").textContent = f.title + " " + f.kind;
  document.getElementById("status").textContent = f.status;
  const table = document.getElementById("figures");
  table.innerHTML = "";
  for (const [name, get] of rows) {
    const value = get(f);
    if (value == null) continue;
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = value;
  }
  curve(f.curve || []);
  const image = document.getElementById("image");
  if (f.image_version > 0 && image.dataset.version != String(f.image_version)) {
    image.onload = () => { image.hidden = false; image.dataset.loaded = "yes";
                           document.getElementById("noimage").hidden = true; };
    image.src = "preview.jpg?v=" + f.image_version;
    image.dataset.version = String(f.image_version);
  }
}
show(initial);
const source = new EventSource("events");
source.onmessage = message => show(JSON.parse(message.data));
source.addEventListener("closed", () => {
  source.close();
  document.getElementById("status").textContent += " (the preview has stopped)";
});
</script></body></html>
"""
