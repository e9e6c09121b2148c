/* The admin dashboard: fetches the JSON endpoints (roll-ups), draws the charts with the
 * vendored Chart.js, and keeps the live request feed open over a websocket.
 *
 * When every chart of a load has been drawn, <body data-dashboard-ready="1"> (and each
 * canvas data-rendered="1"): tests and scripts wait for that, not for a timer.
 * Data from the server is written with textContent only, never as HTML.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  ];
  const charts = {};
  const state = { range: "24h", org: "", partialFrom: null };
  let loadSeq = 0;

  // --- Formatting --------------------------------------------------------------------

  // Money for people: the port of apps.core.money.usd_display (tests hold them equal).
  // Cents from a dollar up ("$1,234.57"); below a dollar three significant digits, at
  // least cents ("$0.50", "$0.0375", "$0.00000495"); half rounds up. Works on the exact
  // decimal text the server sends (BigInt arithmetic), so no float rounding shows.
  const SIGNIFICANT = 3;
  function usd(value) {
    const text = String(value === null || value === undefined || value === "" ? "0" : value).trim();
    const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
    if (!m || (m[2] === "" && !m[3])) return "$" + text;
    const negative = m[1] === "-";
    let digits = BigInt((m[2] || "") + (m[3] || "") || "0");
    let scale = (m[3] || "").length - parseInt(m[4] || "0", 10); // value = digits × 10^-scale
    if (scale < 0) { digits *= 10n ** BigInt(-scale); scale = 0; }
    let places = 2;
    const one = 10n ** BigInt(scale);
    if (digits !== 0n && digits < one) {
      const adjusted = digits.toString().length - 1 - scale; // power of ten of the first digit
      places = Math.max(2, SIGNIFICANT - 1 - adjusted);
    }
    if (scale > places) {
      const divisor = 10n ** BigInt(scale - places);
      let q = digits / divisor;
      if ((digits % divisor) * 2n >= divisor) q += 1n;
      digits = q;
    } else {
      digits *= 10n ** BigInt(places - scale);
    }
    const padded = digits.toString().padStart(places + 1, "0");
    const whole = padded.slice(0, padded.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    let fraction = padded.slice(padded.length - places).replace(/0+$/, "");
    fraction = fraction.padEnd(2, "0");
    return (negative && digits !== 0n ? "-" : "") + "$" + whole + "." + fraction;
  }
  window.odockUsd = usd; // the browser test compares it with the server's formatter

  function usdTick(value) {
    return usd(value);
  }

  function count(n) {
    return Number(n || 0).toLocaleString("en-US");
  }

  function pct(n) {
    return n === null || n === undefined ? "–" : n.toFixed(2) + " %";
  }

  function ms(n) {
    return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US") + " ms";
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(n) { return String(n).padStart(2, "0"); }

  // The bucket holding the hour the roll-ups have only in part is marked "(so far)".
  function bucketLabel(iso, bucket) {
    const d = new Date(iso);
    const day = MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();
    const label = bucket === "hour" ? day + " " + pad(d.getUTCHours()) + ":00" : day;
    return isPartial(d, bucket) ? label + " (so far)" : label;
  }

  function isPartial(d, bucket) {
    if (!state.partialFrom) return false;
    const p = new Date(state.partialFrom);
    if (bucket === "hour") return d.getTime() === p.getTime();
    return d.getUTCFullYear() === p.getUTCFullYear() && d.getUTCMonth() === p.getUTCMonth() && d.getUTCDate() === p.getUTCDate();
  }

  function timeOfDay(iso) {
    const d = new Date(iso);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  // --- Data --------------------------------------------------------------------------

  function url(chart, extra) {
    const params = new URLSearchParams({ range: state.range });
    if (state.org) params.set("org", state.org);
    Object.entries(extra || {}).forEach(([k, v]) => params.set(k, v));
    return config.dataUrl.replace("CHART", chart) + "?" + params.toString();
  }

  async function fetchJson(chart) {
    const response = await fetch(url(chart), { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(chart + ": HTTP " + response.status);
    return response.json();
  }

  // --- Charts ------------------------------------------------------------------------

  // A dashed line at 100 % of each budget's limit.
  const limitLine = {
    id: "limitLine",
    afterDatasetsDraw(chart, _args, options) {
      if (!options || options.at === undefined) return;
      const x = chart.scales.x.getPixelForValue(options.at);
      const { top, bottom } = chart.chartArea;
      const ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = "#c62828";
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, bottom);
      ctx.stroke();
      ctx.restore();
    },
  };

  function draw(id, chartConfig) {
    const canvas = document.getElementById(id);
    if (charts[id]) charts[id].destroy();
    canvas.dataset.rendered = "0";
    chartConfig.options = Object.assign(
      { responsive: true, maintainAspectRatio: false, animation: false },
      chartConfig.options || {}
    );
    charts[id] = new Chart(canvas, chartConfig);
    canvas.dataset.rendered = "1";
  }

  function usdAxis() {
    return { beginAtZero: true, ticks: { callback: (v) => usdTick(v) } };
  }

  function drawSpend(id, data) {
    draw(id, {
      type: "bar",
      data: {
        labels: data.labels.map((l) => bucketLabel(l, data.bucket)),
        datasets: data.series.map((s, i) => ({
          label: s.label,
          data: s.data.map(Number),
          backgroundColor: PALETTE[i % PALETTE.length],
          stack: "spend",
        })),
      },
      options: {
        scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, usdAxis()) },
        plugins: {
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + usd(data.series[c.datasetIndex].data[c.dataIndex]) } },
          legend: { position: "right" },
        },
      },
    });
  }

  function drawTopKeys(data) {
    draw("chart-top-keys", {
      type: "bar",
      data: {
        labels: data.keys.map((k) => k.name),
        datasets: [{ label: "Spend", data: data.keys.map((k) => Number(k.cost_usd)), backgroundColor: PALETTE[0] }],
      },
      options: {
        indexAxis: "y",
        scales: { x: usdAxis() },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: (items) => data.keys[items[0].dataIndex].label,
              label: (c) => usd(data.keys[c.dataIndex].cost_usd) + " · " + count(data.keys[c.dataIndex].requests) + " requests",
            },
          },
        },
      },
    });
  }

  function drawRates(data) {
    draw("chart-rates", {
      data: {
        labels: data.labels.map((l) => bucketLabel(l, data.bucket)),
        datasets: [
          { type: "line", label: "Errors (5xx) %", data: data.error_rate, borderColor: "#c62828", backgroundColor: "#c62828", yAxisID: "y", spanGaps: true, tension: 0.2 },
          { type: "line", label: "Refusals (4xx) %", data: data.refusal_rate, borderColor: "#ef6c00", backgroundColor: "#ef6c00", yAxisID: "y", spanGaps: true, tension: 0.2 },
          { type: "bar", label: "Requests", data: data.requests, backgroundColor: "rgba(78,121,167,0.25)", yAxisID: "y1" },
        ],
      },
      options: {
        scales: {
          y: { beginAtZero: true, position: "left", ticks: { callback: (v) => v + " %" } },
          y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } },
        },
      },
    });
  }

  function drawLatency(data) {
    const colors = { p50: "#59a14f", p95: "#f28e2b", p99: "#e15759" };
    draw("chart-latency", {
      type: "line",
      data: {
        labels: data.labels.map((l) => bucketLabel(l, data.bucket)),
        datasets: ["p50", "p95", "p99"].map((q) => ({
          label: q, data: data[q], borderColor: colors[q], backgroundColor: colors[q], spanGaps: true, tension: 0.2,
        })),
      },
      options: {
        scales: { y: { beginAtZero: true, ticks: { callback: (v) => v + " ms" } } },
        plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + ms(c.raw) } } },
      },
    });
  }

  function drawBudgets(data) {
    const rows = data.budgets;
    draw("chart-budgets", {
      type: "bar",
      data: {
        labels: rows.map((b) => b.label + " (" + b.period + ")"),
        datasets: [
          { label: "Spent % of limit", data: rows.map((b) => b.percent_used || 0), backgroundColor: "#4e79a7" },
          { label: "Projected at period end %", data: rows.map((b) => b.projected_percent || 0), backgroundColor: "rgba(242,142,43,0.55)" },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, suggestedMax: 110, ticks: { callback: (v) => v + " %" } } },
        plugins: {
          limitLine: { at: 100 },
          tooltip: {
            callbacks: {
              label: (c) => {
                const b = rows[c.dataIndex];
                return c.datasetIndex === 0
                  ? "spent " + usd(b.spent_usd) + " of " + usd(b.limit_usd)
                  : b.projected_usd === null ? "no period end" : "projected " + usd(b.projected_usd) + " of " + usd(b.limit_usd);
              },
            },
          },
        },
      },
      plugins: [limitLine],
    });
    const note = document.getElementById("budgets-note");
    note.textContent = data.count === 0
      ? "No budgets in scope."
      : "The " + rows.length + " most used of " + data.count + " budgets; dashed line: the limit.";
  }

  function drawFindings(data) {
    draw("chart-findings", {
      type: "bar",
      data: {
        labels: data.types.map((t) => t.type),
        datasets: [{ label: "Requests", data: data.types.map((t) => t.requests), backgroundColor: data.types.map((_, i) => PALETTE[(i + 3) % PALETTE.length]) }],
      },
      options: { indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } }, plugins: { legend: { display: false } } },
    });
    document.getElementById("findings-note").textContent =
      (data.types.length ? "" : "No findings. ") +
      "Requests with a finding, from the " + count(data.scanned) + " most recent records of the range" +
      (data.capped ? " (capped at " + count(data.scan_limit) + ")." : ".");
  }

  function showOverview(data, latency) {
    const spend = document.getElementById("kpi-spend");
    spend.textContent = usd(data.total_usd);
    spend.dataset.totalUsd = data.total_usd;
    document.getElementById("kpi-requests").textContent = count(data.requests);
    document.getElementById("kpi-errors").textContent = pct(data.error_rate);
    document.getElementById("kpi-refusals").textContent = pct(data.refusal_rate);
    document.getElementById("kpi-p95").textContent = ms(latency.overall.p95);
    const asof = document.getElementById("dash-asof");
    asof.dataset.partialFrom = data.partial_from || "";
    asof.textContent = "Times in UTC · roll-ups " +
      (data.rolled_up_at ? "as of " + new Date(data.rolled_up_at).toISOString().slice(0, 16).replace("T", " ") : "not run yet") +
      (data.partial_from ? " · the current hour so far" : "");
  }

  async function loadAll() {
    const seq = ++loadSeq;
    document.body.dataset.dashboardReady = "0";
    const names = ["overview", "spend-team", "spend-model", "top-keys", "rates", "latency", "budgets", "findings"];
    let results;
    try {
      results = await Promise.all(names.map(fetchJson));
    } catch (err) {
      document.getElementById("dash-asof").textContent = "Could not load: " + err.message;
      document.body.dataset.dashboardReady = "error";
      return;
    }
    if (seq !== loadSeq) return; // a newer selection is loading
    const [overview, spendTeam, spendModel, topKeys, rates, latency, budgets, findings] = results;
    state.partialFrom = overview.partial_from;
    showOverview(overview, latency);
    drawSpend("chart-spend-team", spendTeam);
    drawSpend("chart-spend-model", spendModel);
    drawTopKeys(topKeys);
    drawRates(rates);
    drawLatency(latency);
    drawBudgets(budgets);
    drawFindings(findings);
    document.body.dataset.dashboardReady = "1";
  }

  // --- Live feed ---------------------------------------------------------------------

  const feed = document.querySelector("#live-feed tbody");
  const liveStatus = document.getElementById("live-status");

  function feedRow(r, fresh) {
    const tr = document.createElement("tr");
    if (fresh) tr.className = "fresh";
    tr.dataset.requestId = r.request_id;
    const cells = [
      [timeOfDay(r.time), ""],
      [r.key_prefix || "–", ""],
      [r.model || "–", ""],
      [String(r.status), "status"],
      [ms(r.latency_ms), "num"],
      [usd(r.cost_usd), "num"],
    ];
    for (const [text, kind] of cells) {
      const td = document.createElement("td");
      if (kind === "status") {
        const span = document.createElement("span");
        span.className = "dash-status s" + String(r.status).charAt(0);
        span.textContent = text;
        td.appendChild(span);
      } else {
        td.textContent = text;
        if (kind) td.className = kind;
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function addRecords(records, fresh) {
    for (const r of records) {
      if (state.org && String(r.organization_id) !== state.org) continue;
      feed.insertBefore(feedRow(r, fresh), feed.firstChild);
    }
    while (feed.rows.length > config.feedRows) feed.deleteRow(feed.rows.length - 1);
  }

  async function loadRecent() {
    try {
      const data = await fetchJson("recent");
      feed.replaceChildren();
      addRecords(data.records.slice().reverse(), false);
    } catch (err) {
      /* the live part still works */
    }
  }

  function setLive(status, text) {
    liveStatus.dataset.live = status;
    liveStatus.textContent = text;
  }

  let retry = 1000;
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(proto + location.host + config.livePath);
    let ping = null;
    socket.onopen = () => {
      retry = 1000;
      setLive("open", "live");
      ping = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), config.pingSeconds * 1000);
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "records") addRecords(message.records, true);
    };
    socket.onclose = () => {
      clearInterval(ping);
      setLive("closed", "reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  // --- Controls ----------------------------------------------------------------------

  function syncControls() {
    document.querySelectorAll(".dash-range").forEach((b) => b.classList.toggle("active", b.dataset.range === state.range));
    document.getElementById("dash-org").value = state.org;
  }

  function select(change) {
    Object.assign(state, change);
    const params = new URLSearchParams();
    params.set("range", state.range);
    if (state.org) params.set("org", state.org);
    history.replaceState(null, "", "?" + params.toString());
    syncControls();
    loadAll();
    if ("org" in change) loadRecent();
  }

  function start() {
    const params = new URLSearchParams(location.search);
    if (config.ranges.includes(params.get("range"))) state.range = params.get("range");
    state.org = params.get("org") || "";
    syncControls();
    document.querySelectorAll(".dash-range").forEach((b) => b.addEventListener("click", () => select({ range: b.dataset.range })));
    document.getElementById("dash-org").addEventListener("change", (e) => select({ org: e.target.value }));
    loadAll();
    loadRecent().then(connect);
    // The roll-ups move on every ODOCK_SCHEDULER_SECONDS (or beat's minutes): follow
    // them while the page is in view, one load at a time.
    setInterval(() => {
      if (!document.hidden && document.body.dataset.dashboardReady !== "0") loadAll();
    }, config.refreshSeconds * 1000);
  }

  start();
})();
