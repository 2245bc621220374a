// Small line charts on a canvas: a series per color over the last `span` seconds, with the
// latest value and the maximum written in the corner. No dependencies.
"use strict";

function drawChart(canvas, series, span) {
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = Date.now() / 1000;
  let max = 1;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
  const pad = 4, top = 14;
  const x = (t) => pad + (w - 2 * pad) * (1 - (now - t) / span);
  const y = (v) => h - pad - (h - pad - top) * (v / max);
  ctx.strokeStyle = "#e5e7eb"; ctx.lineWidth = 1;
  for (let i = 1; i <= 3; i++) { const gy = y((max * i) / 4); ctx.beginPath(); ctx.moveTo(pad, gy); ctx.lineTo(w - pad, gy); ctx.stroke(); }
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
    let started = false;
    for (const [t, v] of s.points) {
      if (now - t > span) continue;
      if (!started) { ctx.moveTo(x(t), y(v)); started = true; } else ctx.lineTo(x(t), y(v));
    }
    ctx.stroke();
  }
  ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui, sans-serif";
  const latest = series.map((s) => `${s.label} ${s.points.length ? s.points[s.points.length - 1][1] : 0}`).join("  ·  ");
  ctx.fillText(`${latest}   (max ${max})`, pad + 2, 11);
}
