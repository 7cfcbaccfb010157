"""The HTML of ``genrl gallery``'s ``index.html``: one static page that opens from disk (relative links,
no server, no network, no external scripts).

Layout, top to bottom: the training curves; the controls; the samples as a prompt x run table, every
sample large (nearest-neighbour upscaled, drawn ``image-rendering: pixelated``) with one score as a
coloured badge and every score in its hover text; the mean scores; the runs; their configs.

Controls (a few lines of plain JavaScript, written here because the page must work offline and from
``file://``, where no front-end library can be fetched): the score the badges show, the sample size,
sorting the prompts (rows) by any score's mean over one run's seeds, sorting the runs (columns) by
any score's mean over the page (``base`` stays first, as the reference), and a prompt filter. The
state lives in the URL's fragment (``#badge=K&sort=K&by=RUN&order=desc&cols=K&filter=TEXT&size=N``),
so a view can be bookmarked or linked, and the page applies it on load. Without JavaScript the table
is complete, in the task's prompt order.
"""

from __future__ import annotations

import html
import json
import math

e = html.escape

_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:1.4em;margin:0 0 8px}h2{font-size:1.15em;margin:24px 0 8px}
img{image-rendering:pixelated}
.curves{max-width:100%;max-height:360px}
.controls{position:sticky;top:0;z-index:2;background:#fafafa;border:1px solid #ddd;padding:6px 10px;
 display:flex;flex-wrap:wrap;gap:14px;align-items:center;font-size:.9em}
.controls label{display:flex;gap:4px;align-items:center}
.wrap{overflow:auto}
table.grid{border-collapse:collapse}
table.grid th,table.grid td{border:1px solid #ddd;padding:4px;vertical-align:top}
table.grid thead th{position:sticky;top:0;background:#fff}
table.grid td.prompt{max-width:180px;font-size:.9em}
.cell{display:flex;flex-wrap:wrap;gap:4px;max-width:calc(3 * var(--size) + 8px)}
figure.s{position:relative;margin:0;width:var(--size)}
figure.s img{width:var(--size);height:auto;display:block}
.badge{position:absolute;right:2px;bottom:2px;font:11px/1.3 monospace;padding:0 3px;border-radius:3px;
 background:#0009;color:#fff}
.mean{font-weight:normal;font-size:.85em;color:#555}
table.plain{border-collapse:collapse}table.plain td,table.plain th{border:1px solid #ccc;padding:3px 8px;text-align:left}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}
"""

_JS = r"""
(function(){
var data=JSON.parse(document.getElementById('gallery-data').textContent);
var table=document.querySelector('table.grid'),tbody=table.tBodies[0],head=table.tHead.rows[0];
var $=function(id){return document.getElementById(id)};
function mean(a){a=a.filter(function(x){return x!==null&&isFinite(x)});return a.length?a.reduce(function(s,x){return s+x},0)/a.length:NaN}
var range={};data.keys.forEach(function(k){var v=[];data.prompts.forEach(function(p){data.columns.forEach(function(c){
 p.cells[c].forEach(function(s){var x=s.scores[k];if(x!==null&&isFinite(x))v.push(x)})})});
 range[k]=v.length?[Math.min.apply(null,v),Math.max.apply(null,v)]:[0,1]});
function num(x){return x===null||x===undefined||!isFinite(x)?-Infinity:x}
function rowMean(i,k,c){return mean(data.prompts[i].cells[c].map(function(s){return s.scores[k]}))}
function fmt(x){return x===null||!isFinite(x)?'n/a':x.toFixed(3)}
function state(){return{badge:$('badge').value,sort:$('sort').value,by:$('by').value,order:$('order').value,
 cols:$('cols').value,filter:$('filter').value,size:$('size').value}}
function apply(){
 var s=state();document.body.style.setProperty('--size',s.size+'px');
 // badges: the chosen score, coloured from red (lowest on the page) to green (highest)
 document.querySelectorAll('figure.s').forEach(function(f){
  var v=data.prompts[+f.dataset.p].cells[f.dataset.c][+f.dataset.i].scores[s.badge],b=f.querySelector('.badge');
  var r=range[s.badge],t=r[1]>r[0]?(v-r[0])/(r[1]-r[0]):0.5;
  b.textContent=fmt(v);b.style.background=(v===null||!isFinite(v))?'#0009':'hsla('+Math.round(120*t)+',70%,32%,.85)'});
 // columns: base first, the others by their mean of the chosen score (descending) or as given
 var order=data.columns.slice();if(s.cols){var rest=order.filter(function(c){return c!=='base'});
  rest.sort(function(a,b){return num(data.summary[b][s.cols])-num(data.summary[a][s.cols])||order.indexOf(a)-order.indexOf(b)});
  order=order.indexOf('base')>=0?['base'].concat(rest):rest}
 function place(tr){order.forEach(function(c){tr.appendChild(tr.querySelector('[data-c="'+CSS.escape(c)+'"]'))})}
 place(head);Array.from(tbody.rows).forEach(place);
 order.forEach(function(c){head.querySelector('[data-c="'+CSS.escape(c)+'"] .mean').textContent=
  'mean '+s.badge+' '+fmt(data.summary[c][s.badge])});
 // rows: prompt order, or the chosen score's mean over one run's seeds
 var rows=Array.from(tbody.rows);
 rows.sort(function(a,b){var i=+a.dataset.p,j=+b.dataset.p;if(!s.sort)return i-j;
  var x=num(rowMean(i,s.sort,s.by)),y=num(rowMean(j,s.sort,s.by));
  return (s.order==='asc'?x-y:y-x)||i-j});
 rows.forEach(function(r){tbody.appendChild(r)});
 var q=s.filter.trim().toLowerCase(),shown=0;
 rows.forEach(function(r){var ok=!q||r.dataset.prompt.toLowerCase().indexOf(q)>=0;r.hidden=!ok;shown+=ok});
 $('shown').textContent=shown+' of '+rows.length+' prompts';
 var h=new URLSearchParams();Object.keys(s).forEach(function(k){if(s[k]!=='')h.set(k,s[k])});
 history.replaceState(null,'','#'+h.toString());
}
var init=new URLSearchParams(location.hash.slice(1));
['badge','sort','by','order','cols','filter','size'].forEach(function(k){var el=$(k);
 if(init.has(k)&&(el.tagName!=='SELECT'||Array.from(el.options).some(function(o){return o.value===init.get(k)})))el.value=init.get(k);
 el.addEventListener(el.tagName==='INPUT'?'input':'change',apply)});
apply();
})();
window.addEventListener('load',function(){var i=Array.from(document.images);
document.body.dataset.imagesTotal=i.length;document.body.dataset.imagesLoaded=
i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;});
"""


def fmt(v: float) -> str:
    """A score for display: 3 decimals, ``n/a`` when missing (NaN)."""
    return "n/a" if not math.isfinite(v) else f"{v:.3f}"


def default_badge(keys: list[str]) -> str:
    """The score the badges show first: the task's gold judge when there is one (``*gold*``), else the first."""
    return next((k for k in keys if "gold" in k), keys[0] if keys else "")


def _options(values: list[str], selected: str, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    return "".join(
        f"<option value='{e(v)}'{' selected' if v == selected else ''}>{e(labels.get(v, v))}</option>" for v in values
    )


def _json_script(obj) -> str:
    """JSON for an inline ``<script type=application/json>``: NaN as null, ``</`` escaped."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), allow_nan=False).replace("</", "<\\/")


def render_page(
    title: str, runs: list[dict], columns: list[str], summary: dict, prompts: list[dict], curves: bool
) -> str:
    """``index.html`` (module docstring).

    ``runs``: per column ``label``, ``dir``, ``weights``, ``sampling``, ``config_link`` (HTML),
    ``config_text`` (or None). ``summary``: column -> score -> mean over the gallery. ``prompts``: per
    prompt ``{"prompt", "cells": {column: [{"src", "seed", "scores": {key: value}}]}}`` (one entry per
    seed, ``src`` relative to the page)."""
    keys = sorted({k for p in prompts for c in p["cells"].values() for s in c for k in s["scores"]})
    badge = default_badge(keys)
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{_CSS}</style></head><body style='--size:96px'>",
        f"<h1>{e(title)}</h1>",
    ]
    if curves:
        out.append(
            "<details open><summary>training curves</summary>"
            "<a href='curves.png'><img class='curves' src='curves.png' alt='training curves'></a></details>"
        )
    out.append(
        "<div class='controls'>"
        f"<label>badge <select id='badge'>{_options(keys, badge)}</select></label>"
        f"<label>size <input id='size' type='range' min='32' max='256' step='8' value='96'></label>"
        f"<label>sort prompts by <select id='sort'>{_options(['', *keys], '', {'': 'prompt order'})}</select></label>"
        f"<label>of <select id='by'>{_options(columns, columns[-1])}</select></label>"
        f"<select id='order' aria-label='order'>{_options(['desc', 'asc'], 'desc', {'desc': 'high first', 'asc': 'low first'})}</select>"
        f"<label>sort runs by <select id='cols'>{_options(['', *keys], '', {'': 'given order'})}</select></label>"
        "<label>filter prompts <input id='filter' type='search' placeholder='e.g. seven'></label>"
        f"<span id='shown'>{len(prompts)} prompts</span></div>"
    )
    out.append("<div class='wrap'><table class='grid'><thead><tr><th>prompt</th>")
    for c in columns:
        mean = fmt(summary[c].get(badge, float("nan")))
        out.append(f"<th data-c='{e(c)}'>{e(c)}<br><span class='mean'>mean {e(badge)} {mean}</span></th>")
    out.append("</tr></thead><tbody>")
    for j, p in enumerate(prompts):
        out.append(f"<tr data-p='{j}' data-prompt='{e(p['prompt'])}'><td class='prompt'>{e(p['prompt'])}</td>")
        for c in columns:
            out.append(f"<td data-c='{e(c)}'><div class='cell'>")
            for i, s in enumerate(p["cells"][c]):
                tip = f"{c}, seed {s['seed']}\n" + "\n".join(f"{k} {fmt(v)}" for k, v in sorted(s["scores"].items()))
                out.append(
                    f"<figure class='s' data-p='{j}' data-c='{e(c)}' data-i='{i}' title='{e(tip)}'>"
                    f"<img src='{e(s['src'])}' alt='{e(c)} seed {s['seed']}' loading='eager'>"
                    f"<span class='badge'>{fmt(s['scores'].get(badge, float('nan')))}</span></figure>"
                )
            out.append("</div></td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    out.append(
        "<h2>Mean scores of the gallery's samples</h2><table class='plain'><tr><th>metric</th>"
        + "".join(f"<th>{e(c)}</th>" for c in columns)
        + "</tr>"
    )
    for k in sorted({k for s in summary.values() for k in s}):
        out.append(
            f"<tr><td>{e(k)}</td>"
            + "".join(f"<td>{fmt(summary[c].get(k, float('nan')))}</td>" for c in columns)
            + "</tr>"
        )
    out.append(
        "</table><h2>Runs</h2><table class='plain'><tr><th>column</th><th>run directory</th><th>weights</th>"
        "<th>sampling</th><th>config</th></tr>"
    )
    for r in runs:
        out.append(
            f"<tr><td>{e(r['label'])}</td><td>{e(r['dir'])}</td><td>{e(r['weights'])}</td>"
            f"<td>{e(r['sampling'])}</td><td>{r['config_link']}</td></tr>"
        )
    out.append("</table><h2>Configs</h2>")
    for r in runs:
        if r.get("config_text") is not None:
            out.append(f"<details><summary>{e(r['label'])}</summary><pre>{e(r['config_text'])}</pre></details>")
    data = {"columns": columns, "keys": keys, "summary": summary, "prompts": prompts}
    out.append(f"<script id='gallery-data' type='application/json'>{_json_script(data)}</script>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out)
