// The report pages (/reports/{name}): one Chart.js bar chart from the page's JSON block, and the
// conversations behind a clicked bar listed under it (the same ids as the table's drill links).
"use strict";
(function () {
  const node = document.getElementById("report-data");
  const canvas = document.getElementById("report-chart");
  if (!node || !canvas || typeof Chart === "undefined") return;
  const report = JSON.parse(node.textContent);
  const spec = report.chart;
  // Colour-blind-safe palette (Okabe-Ito), in a fixed order so that a series keeps its colour.
  const palette = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000"];

  function showDrill(rowIndex) {
    const row = report.rows[rowIndex];
    const convs = report.convs[rowIndex] || [];
    const title = document.getElementById("drill-title");
    const list = document.getElementById("drill-list");
    title.textContent = report.columns.map((c, i) => `${c.replace(/_/g, " ")}: ${row[i] === null ? "-" : row[i]}`).join(" · ")
      + ` — ${convs.length} conversation(s)`;
    list.replaceChildren(...convs.map((cid) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/conversations/${encodeURIComponent(cid)}`;
      a.textContent = `#${cid}`;
      a.dataset.conv = cid;
      li.append(a);
      return li;
    }));
    document.getElementById("drill").hidden = false;
  }

  const horizontal = report.name === "transfers";
  const chart = new Chart(canvas, {
    type: "bar",
    data: {
      labels: spec.labels,
      datasets: spec.datasets.map((d, i) => ({
        label: d.label, data: d.data, backgroundColor: palette[i % palette.length], borderRadius: 2, maxBarThickness: 72,
      })),
    },
    options: {
      indexAxis: horizontal ? "y" : "x",
      maintainAspectRatio: false,
      animation: false,
      scales: {
        x: { stacked: spec.stacked, title: { display: horizontal, text: spec.unit } },
        y: { stacked: spec.stacked, beginAtZero: true, title: { display: !horizontal, text: spec.unit } },
      },
      plugins: { legend: { display: spec.datasets.length > 1, position: "bottom" } },
      onClick(event) {
        const hit = chart.getElementsAtEventForMode(event, "nearest", { intersect: true }, true)[0];
        if (!hit) return;
        const row = spec.datasets[hit.datasetIndex].rows[hit.index];
        if (row !== null && row !== undefined) showDrill(row);
      },
      onHover(event, elements) {
        event.native.target.style.cursor = elements.length ? "pointer" : "default";
      },
    },
  });
  // For tests and keyboard users alike: the chart is reachable as the canvas's property.
  canvas.chart = chart;
})();
