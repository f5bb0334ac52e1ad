/* Patient page: vital-sign trends (1 h / 8 h / 24 h) and NEWS2 history, drawn with uPlot from
 * the page's trends.json (time-bucketed min/mean/max computed by the database). Plain script. */
(function () {
  "use strict";

  const root = document.getElementById("patient-trends");
  if (!root || !window.uPlot) {
    return;
  }
  const uPlot = window.uPlot;
  const trendsUrl = root.dataset.trendsUrl;
  const timeZone = root.dataset.timeZone || "UTC";
  const chartsEl = document.getElementById("charts");
  const news2El = document.getElementById("news2-chart");
  const statusEl = document.getElementById("range-status");
  const buttons = Array.from(root.querySelectorAll(".range-buttons button"));
  const REFRESH_MS = 60000; // the charts are not live: reload them every minute, and say when
  const AXIS = "#8a9199";
  const GRID = "#2a323b";
  const UNITS = { "mm[Hg]": "mmHg", Cel: "°C" };

  let hours = 1;
  let plots = [];
  let loading = null;
  let refreshTimer = null;

  function tzDate(seconds) {
    try {
      return uPlot.tzDate(new Date(seconds * 1000), timeZone);
    } catch (error) {
      return new Date(seconds * 1000);
    }
  }

  const hourMinute = uPlot.fmtDate("{HH}:{mm}");

  function axes(label) {
    return [
      {
        stroke: AXIS,
        grid: { stroke: GRID, width: 1 },
        ticks: { stroke: GRID },
        // 24-hour clock in the display time zone (tzDate), as on the rest of the portal.
        values: (u, splits) => splits.map((s) => hourMinute(tzDate(s))),
      },
      { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID }, label, size: 52 },
    ];
  }

  // A run of missing buckets is a hole in the line (null), never bridged.
  function withGaps(times, columns, bucketSeconds) {
    const xs = [];
    const out = columns.map(() => []);
    for (let i = 0; i < times.length; i += 1) {
      if (i > 0 && times[i] - times[i - 1] > 2 * bucketSeconds) {
        xs.push(times[i - 1] + bucketSeconds);
        out.forEach((column) => column.push(null));
      }
      xs.push(times[i]);
      columns.forEach((column, c) => out[c].push(column[i]));
    }
    return [xs, ...out];
  }

  function width(el) {
    return Math.max(300, el.clientWidth - 16);
  }

  function vitalChart(vital, data) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.code = vital.code;
    const title = document.createElement("h3");
    const unit = UNITS[vital.unit] || (vital.unit.startsWith("{") ? "" : vital.unit);
    title.textContent = vital.name + (unit ? " (" + unit + ")" : "");
    box.appendChild(title);
    chartsEl.appendChild(box);
    const columns = withGaps(vital.t, [vital.mean, vital.min, vital.max], data.bucket_seconds);
    const plot = new uPlot(
      {
        width: width(box),
        height: 190,
        tzDate,
        scales: { x: { time: true, range: () => [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000] } },
        axes: axes(unit),
        series: [
          {},
          { label: "mean", stroke: "#8fd3ff", width: 1.5, value: (u, v) => (v == null ? "–" : v.toFixed(vital.decimals + 1)) },
          { label: "min", stroke: "rgba(143, 211, 255, .35)", width: 1 },
          { label: "max", stroke: "rgba(143, 211, 255, .35)", width: 1 },
        ],
        bands: [{ series: [3, 2], fill: "rgba(143, 211, 255, .14)" }],
      },
      columns,
      box,
    );
    plots.push(plot);
  }

  function news2Chart(data) {
    news2El.replaceChildren();
    const n = data.news2;
    if (!n.t.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "No NEWS2 score in this range.";
      news2El.appendChild(empty);
      return;
    }
    const plot = new uPlot(
      {
        width: width(news2El),
        height: 170,
        tzDate,
        scales: {
          x: { time: true, range: () => [Date.parse(data.start) / 1000, Date.parse(data.end) / 1000] },
          y: { range: [0, Math.max(10, Math.max(...n.total) + 1)] },
        },
        axes: axes("NEWS2"),
        series: [
          {},
          {
            label: "NEWS2",
            stroke: "#f4f4f4",
            width: 2,
            paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: n.t.length <= 120, size: 5 },
            value: (u, v, s, i) =>
              v == null ? "–" : v + (n.complete[i] ? "" : " (incomplete)") + " · " + n.risk[i],
          },
        ],
      },
      [n.t, n.total],
      news2El,
    );
    plots.push(plot);
  }

  function render(data) {
    for (const plot of plots) {
      plot.destroy();
    }
    plots = [];
    chartsEl.replaceChildren();
    if (!data.vitals.length) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "No readings in the last " + data.hours + " h.";
      chartsEl.appendChild(empty);
    }
    for (const vital of data.vitals) {
      vitalChart(vital, data);
    }
    news2Chart(data);
    const asOf = new Intl.DateTimeFormat("en-GB", {
      timeZone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).format(new Date(data.end));
    statusEl.textContent =
      "Last " + data.hours + " h, " + data.bucket_seconds + " s buckets, as of " + asOf +
      " (" + timeZone + "; reloads every minute)";
  }

  function load(newHours) {
    hours = newHours;
    for (const button of buttons) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.hours) === hours));
    }
    statusEl.textContent = "Loading…";
    if (loading) {
      loading.abort();
    }
    const controller = new AbortController();
    loading = controller;
    fetch(trendsUrl + "?hours=" + hours, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      signal: controller.signal,
    })
      .then((response) => {
        if (!response.ok) {
          throw new Error("the server answered " + response.status);
        }
        return response.json();
      })
      .then((data) => {
        if (loading === controller) {
          render(data);
        }
      })
      .catch((error) => {
        if (error.name !== "AbortError") {
          statusEl.textContent = "Could not load the trends (" + error.message + "): what is shown may be out of date.";
        }
      });
    clearInterval(refreshTimer);
    refreshTimer = setInterval(() => load(hours), REFRESH_MS);
  }

  for (const button of buttons) {
    button.addEventListener("click", () => load(Number(button.dataset.hours)));
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const plot of plots) {
        const box = plot.root.parentNode;
        plot.setSize({ width: width(box), height: plot.height });
      }
    }, 150);
  });
  load(hours);
})();
