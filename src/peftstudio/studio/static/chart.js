// A small SVG line chart: several series of [x, y] points, axes with min/max labels, a legend.
"use strict";

function lineChart(title, series, options = {}) {
  const width = 440, height = 220, left = 52, right = 12, top = 26, bottom = 26;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  const all = series.flatMap((s) => s.points);
  svg.setAttribute("data-points", String(all.length));
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("text", { x: left, y: 15, style: "font-size:12px;font-weight:600;fill:#1d2330" }, title);
  if (!all.length) {
    add("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "waiting for the first log step…");
    return svg;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (options.xMax) x1 = Math.max(x1, options.xMax);
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const sx = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const sy = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
  add("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, stroke: "#c9ced8" });
  add("line", { x1: left, y1: top, x2: left, y2: height - bottom, stroke: "#c9ced8" });
  const label = (value) => (Math.abs(value) < 0.01 && value !== 0 ? value.toExponential(1) : value.toPrecision(3));
  add("text", { x: left - 4, y: top + 4, "text-anchor": "end" }, label(y1));
  add("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, label(y0));
  add("text", { x: left, y: height - 8 }, "step " + x0);
  add("text", { x: width - right, y: height - 8, "text-anchor": "end" }, "step " + x1);
  series.forEach((s, index) => {
    if (!s.points.length) return;
    add("polyline", { points: s.points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none",
                      stroke: s.color, "stroke-width": 1.8 });
    for (const p of s.points) add("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.4, fill: s.color, class: "point" });
    add("text", { x: width - right - 110 * (series.length - index - 1), y: 15, "text-anchor": "end",
                  style: `fill:${s.color}` }, "● " + s.name);
  });
  return svg;
}
