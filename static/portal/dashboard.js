/* Ward dashboard: the live client of docs/dashboard-protocol.md. Plain JavaScript, no
 * framework; uPlot (static/vendor/) draws the sparklines through static/portal/sparkline.js.
 *
 * Clinical rule (../shared/clinical.md): never show stale data as live. Every value shows its
 * age; a value older than stale_after_seconds is styled stale; a bed whose devices are silent
 * shows NO DATA; while the socket is down every value is styled stale under a DISCONNECTED
 * banner; a refused connection (4401/4403/4404) covers the page with the reason.
 *
 * Performance: messages only change the model and mark what changed; one
 * requestAnimationFrame applies the marked changes to DOM nodes kept per bed and per vital.
 * Ages are refreshed by a 1 s timer that rewrites text nodes only when their text changes.
 */
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  if (!root || !("WebSocket" in window)) {
    return;
  }

  // --- constants -----------------------------------------------------------------------------

  const FATAL_CLOSES = {
    4401: {
      title: "Session ended — log in again",
      detail: "You were logged out, or your session expired. Live values have stopped.",
      action: "Log in again",
      href: root.dataset.loginUrl,
    },
    4403: {
      title: "You no longer have access to this ward",
      detail: "Your access to this ward was removed. Live values have stopped.",
      action: "Back to your wards",
      href: root.dataset.wardListUrl,
    },
    4404: {
      title: "Unknown ward",
      detail: "This ward does not exist (any more).",
      action: "Back to your wards",
      href: root.dataset.wardListUrl,
    },
    4426: {
      title: "This page is out of date — reload it",
      detail: "The portal was updated while this page was open. Live values have stopped.",
      action: "Reload",
      href: window.location.href,
    },
  };
  // The server speaks a newer protocol than this page (docs/dashboard-protocol.md): reload.
  const OUTDATED_CLOSE = 4426;
  const OUTDATED_RELOAD_KEY = "portal.outdatedReloadAt";
  const RESYNC_CLOSE = 4000; // our own close, to reconnect at once with last_seq
  // The server closes a screen that stopped confirming events (flow control): reconnect and
  // start again from a snapshot.
  const TOO_SLOW_CLOSE = 4408;
  // Confirm the applied seq to the server ({"type": "ack", "seq": n}) every second, or sooner
  // after this many events, so it never judges this screen too slow.
  const CONFIRM_EVERY_EVENTS = 100;
  const BACKOFF_FIRST_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const GAP_TIMEOUT_MS = 2000; // protocol: a seq gap still open after 2 s → reconnect
  const PING_INTERVAL_MS = 15000;
  // No frame at all for this long (pings are answered) → the connection is dead, even if the
  // browser has not noticed (a half-open TCP connection would otherwise look live forever).
  const SILENCE_LIMIT_MS = 40000;
  const ACK_TIMEOUT_MS = 10000;
  // A central-station screen is watched, not clicked: keep its session from idling out
  // (config/settings.py SESSION_COOKIE_AGE, 30 min by default).
  const KEEPALIVE_MS = 5 * 60 * 1000;
  const SPARKLINE_REDRAW_MS = 5000; // at most this often per sparkline with new data
  const SPARKLINE_SLIDE_MS = 15000; // and at least this often, so the time window slides
  const SPARKLINES_PER_FRAME = 24;
  const SOUND_HIGH_PERIOD_S = 10; // a high-priority burst every 10 s while one is unacknowledged
  const SOUND_TECHNICAL_PERIOD_S = 20;
  const SOUND_DISCONNECTED_AFTER_MS = 10000;
  const PRIORITY_RANK = { high: 0, medium: 1, low: 2 };
  const PRIORITY_LABEL = { high: "HIGH", medium: "MEDIUM", low: "LOW" };
  // Nurse-entered NEWS2 inputs have coded values (monitoring/vitals.py: local codes).
  const CODED_VALUES = {
    "local-acvpu": ["A", "C", "V", "P", "U"],
    "local-supplemental-o2": ["Air", "O₂"],
  };

  const websocketUrl = root.dataset.wsUrl;
  const patientUrlTemplate = root.dataset.patientUrl || "";
  const patientPlaceholder = root.dataset.patientPlaceholder || "";

  const grid = document.getElementById("bed-grid");
  const connectionEl = document.getElementById("connection");
  const connectionText = connectionEl.querySelector(".connection-text").appendChild(
    document.createTextNode(""),
  );
  const staleBanner = document.getElementById("stale-banner");
  const staleBannerText = staleBanner.querySelector(".stale-banner-text");
  const announcer = document.getElementById("alert-announcer");
  const summaryEls = {
    high: document.querySelector('#alert-summary [data-priority="high"]'),
    medium: document.querySelector('#alert-summary [data-priority="medium"]'),
    low: document.querySelector('#alert-summary [data-priority="low"]'),
  };
  const overlay = document.getElementById("fatal-overlay");
  const soundButton = document.getElementById("sound-toggle");

  let clockFormat;
  try {
    clockFormat = new Intl.DateTimeFormat("en-GB", {
      timeZone: root.dataset.timeZone || undefined,
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hourCycle: "h23",
    });
  } catch (error) {
    clockFormat = new Intl.DateTimeFormat("en-GB", { timeStyle: "medium" });
  }

  // --- state -----------------------------------------------------------------------------------

  const state = {
    socket: null,
    phase: "connecting", // connecting | syncing | live | waiting | fatal
    everLive: false,
    notLiveSince: Date.now(),
    attempt: 0,
    reconnectAt: 0,
    reconnectTimer: null,
    lastMessageAt: 0,
    pingSentAt: 0,
    fatalDetail: null,
    // Sequence numbers (protocol: "Sequence numbers").
    haveSnapshot: false,
    lastSeq: null, // the last seq applied contiguously
    confirmedSeq: null, // the last seq confirmed to the server
    appliedAbove: new Map(), // seq > lastSeq already applied → when it arrived (ms)
    gapTimer: null,
    early: [], // events that overtook the snapshot
    clockOffsetMs: 0, // server clock − this browser's clock
    staleAfterMs: 30000,
    catalogue: {},
    beds: new Map(), // bed uuid → BedView
    patientBed: new Map(), // patient uuid → BedView
    alertSeq: new Map(), // alert uuid → seq of the newest event applied (kept after resolve)
    alertBed: new Map(), // alert uuid → BedView showing it
    pendingAcks: new Map(), // alert uuid → timer
    resnapshotAfter: 0,
  };

  const dirty = { vitals: new Set(), beds: new Set(), sparklines: new Set(), summary: false };
  let frameRequested = false;

  function serverNow() {
    return Date.now() + state.clockOffsetMs;
  }

  function parseTime(iso) {
    if (!iso) {
      return null;
    }
    // Browsers only promise to parse milliseconds; the server sends microseconds.
    const ms = Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1"));
    return Number.isNaN(ms) ? null : ms;
  }

  function formatAge(ms) {
    const seconds = Math.max(0, Math.floor(ms / 1000));
    if (seconds < 60) {
      return seconds + " s";
    }
    if (seconds < 3600) {
      return Math.floor(seconds / 60) + " min";
    }
    if (seconds < 86400) {
      return Math.floor(seconds / 3600) + " h";
    }
    return Math.floor(seconds / 86400) + " d";
  }

  function formatClock(ms) {
    return ms === null ? "" : clockFormat.format(new Date(ms));
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function textSlot(parent) {
    return parent.appendChild(document.createTextNode(""));
  }

  function setText(node, text) {
    if (node.data !== text) {
      node.data = text;
    }
  }

  function isEntered(code) {
    const vital = state.catalogue[code];
    return Boolean(vital && String(vital.unit || "").startsWith("{"));
  }

  function formatValue(code, value) {
    if (typeof value !== "number") {
      return "—";
    }
    const coded = CODED_VALUES[code];
    if (coded && Number.isInteger(value) && coded[value] !== undefined) {
      return coded[value];
    }
    const vital = state.catalogue[code];
    return value.toFixed(vital ? vital.decimals || 0 : 0);
  }

  function displayUnit(unit) {
    if (!unit || unit.startsWith("{")) {
      return "";
    }
    return { "mm[Hg]": "mmHg", Cel: "°C", "[degF]": "°F" }[unit] || unit;
  }

  function patientUrl(patientId) {
    return patientUrlTemplate.replace(patientPlaceholder, patientId);
  }

  // --- model: beds ---------------------------------------------------------------------------

  class VitalView {
    constructor(bed, code) {
      const vital = state.catalogue[code] || {};
      this.bed = bed;
      this.code = code;
      this.entered = isEntered(code);
      this.value = null;
      this.unit = vital.unit || "";
      this.observedAtMs = null;
      this.artifact = false;
      this.shownStale = null;
      this.row = element("div", this.entered ? "vital entered" : "vital");
      this.row.dataset.code = code;
      this.row.title = vital.name || code;
      this.row.appendChild(element("span", "v-name", vital.short_name || code));
      const valueEl = this.row.appendChild(element("span", "v-value"));
      this.valueText = textSlot(valueEl);
      const unitEl = this.row.appendChild(element("span", "v-unit"));
      this.unitText = textSlot(unitEl);
      const ageEl = this.row.appendChild(element("span", "v-age"));
      this.ageText = textSlot(ageEl);
      this.spark = null;
      if (!this.entered) {
        const sparkEl = this.row.appendChild(element("div", "v-spark"));
        sparkEl.setAttribute("aria-hidden", "true");
        this.spark = new window.PortalSparkline(sparkEl, {
          height: 22,
          minSpan: (vital.decimals || 0) > 0 ? 1 : 4,
        });
      }
      setText(this.valueText, "—");
      setText(this.unitText, displayUnit(this.unit));
      setText(this.ageText, "no data");
      this.row.classList.add("stale");
    }

    // A value in the code's canonical unit (the catalogue's), taken at observedAtMs.
    update(value, observedAtMs, artifact) {
      if (typeof observedAtMs !== "number" || !Number.isFinite(observedAtMs)) {
        return;
      }
      if (this.spark !== null && !artifact) {
        this.spark.add(observedAtMs, value);
        dirty.sparklines.add(this.spark);
      }
      if (this.observedAtMs !== null && observedAtMs < this.observedAtMs) {
        return; // an older reading overtaken by a newer one
      }
      this.value = value;
      this.observedAtMs = observedAtMs;
      this.artifact = Boolean(artifact);
      dirty.vitals.add(this);
    }

    isStale(nowMs) {
      if (this.observedAtMs === null) {
        return true;
      }
      // Nurse-entered values are charted every few hours, not streamed: their age is shown,
      // but the devices' 30 s staleness rule does not apply to them.
      return !this.entered && nowMs - this.observedAtMs > state.staleAfterMs;
    }

    render(nowMs) {
      setText(this.valueText, formatValue(this.code, this.value));
      setText(this.unitText, displayUnit(this.unit));
      this.row.classList.toggle("artifact", this.artifact);
      const name = (state.catalogue[this.code] || {}).name || this.code;
      this.row.title = this.artifact ? name + " (the device marked this reading unreliable)" : name;
      this.shownStale = null;
      this.renderAge(nowMs);
    }

    renderAge(nowMs) {
      const stale = this.isStale(nowMs);
      let text;
      if (this.observedAtMs === null) {
        text = "no data";
      } else {
        const age = formatAge(nowMs - this.observedAtMs);
        text = stale ? "stale " + age : age;
      }
      setText(this.ageText, text);
      if (stale !== this.shownStale) {
        this.row.classList.toggle("stale", stale);
        this.shownStale = stale;
      }
    }

    destroy() {
      if (this.spark !== null) {
        this.spark.destroy();
      }
    }
  }

  class BedView {
    constructor(data) {
      this.id = data.bed;
      this.label = data.label;
      this.patient = data.patient; // {id, name, mrn} | null
      this.devices = (data.devices || []).map((d) => ({
        serial: d.serial,
        lastSeenMs: parseTime(d.last_seen_at),
      }));
      this.lastSignalMs = null;
      this.news2 = data.news2 || null;
      this.news2Seq = state.lastSeq;
      this.alerts = new Map(); // alert uuid → {data, el, parts}
      this.vitals = new Map();
      this.shownNoData = null;
      this.build();
      for (const device of this.devices) {
        this.noteSignal(device.lastSeenMs);
      }
      if (this.patient) {
        for (const [code, sample] of Object.entries(data.vitals || {})) {
          const view = this.vitals.get(code);
          if (view) {
            const points = ((data.sparklines || {})[code] || [])
              .map(([at, value]) => [typeof at === "number" ? at * 1000 : parseTime(at), value])
              .filter(([ms]) => ms !== null);
            if (view.spark !== null) {
              view.spark.reset(points);
              dirty.sparklines.add(view.spark);
            }
            view.update(sample.value, parseTime(sample.observed_at), sample.artifact);
            this.noteSignal(view.observedAtMs);
          }
        }
      }
      for (const alert of data.alerts || []) {
        this.upsertAlert(alert);
      }
      dirty.beds.add(this);
    }

    build() {
      const tile = element("section", "bed-tile");
      tile.dataset.bed = this.id;
      tile.setAttribute("aria-label", this.label);
      this.tile = tile;

      const head = tile.appendChild(element("header", "bed-head"));
      head.appendChild(element("h2", "bed-label", this.label));
      this.news2El = head.appendChild(element("span", "news2"));
      this.news2El.hidden = true;
      this.news2Text = textSlot(this.news2El);
      this.news2Flag = this.news2El.appendChild(element("span", "news2-incomplete", "incomplete"));

      if (!this.patient) {
        tile.classList.add("empty-bed");
        tile.appendChild(element("p", "empty", "Empty bed"));
        return;
      }
      const who = tile.appendChild(element("div", "bed-patient"));
      const link = who.appendChild(element("a", "patient-name", this.patient.name));
      link.href = patientUrl(this.patient.id);
      who.appendChild(element("span", "mrn", "MRN " + this.patient.mrn));

      this.statusEl = tile.appendChild(element("div", "bed-status"));
      this.statusEl.hidden = true;
      this.statusText = textSlot(this.statusEl);

      this.alertsEl = tile.appendChild(element("div", "bed-alerts"));

      const vitalsEl = tile.appendChild(element("div", "vitals"));
      const enteredEl = element("div", "vitals-entered");
      for (const code of Object.keys(state.catalogue)) {
        const view = new VitalView(this, code);
        this.vitals.set(code, view);
        (view.entered ? enteredEl : vitalsEl).appendChild(view.row);
      }
      if (enteredEl.childNodes.length) {
        tile.appendChild(enteredEl);
      }
    }

    noteSignal(ms) {
      if (ms !== null && (this.lastSignalMs === null || ms > this.lastSignalMs)) {
        this.lastSignalMs = ms;
      }
    }

    upsertAlert(data) {
      let entry = this.alerts.get(data.alert);
      if (!entry) {
        entry = buildBanner(data.alert);
        this.alerts.set(data.alert, entry);
        const previous = state.alertBed.get(data.alert);
        if (previous && previous !== this) {
          previous.removeAlert(data.alert);
        }
        state.alertBed.set(data.alert, this);
      }
      entry.data = data;
      entry.changed = true;
      dirty.beds.add(this);
      dirty.summary = true;
    }

    removeAlert(alertId) {
      const entry = this.alerts.get(alertId);
      if (entry) {
        entry.el.remove();
        this.alerts.delete(alertId);
        dirty.beds.add(this);
        dirty.summary = true;
      }
      if (state.alertBed.get(alertId) === this) {
        state.alertBed.delete(alertId);
      }
    }

    sortedAlerts() {
      return Array.from(this.alerts.values()).sort((a, b) => {
        const rank = PRIORITY_RANK[a.data.priority] - PRIORITY_RANK[b.data.priority];
        if (rank !== 0) {
          return rank;
        }
        if (a.data.technical !== b.data.technical) {
          return a.data.technical ? 1 : -1;
        }
        return (parseTime(a.data.fired_at) || 0) - (parseTime(b.data.fired_at) || 0);
      });
    }

    render(nowMs) {
      const news2 = this.news2;
      if (news2 && typeof news2.total === "number") {
        this.news2El.hidden = false;
        this.news2El.className = "news2 risk-" + (news2.risk || "low");
        this.news2El.classList.toggle("is-incomplete", !news2.complete);
        setText(this.news2Text, "NEWS2 " + news2.total + (news2.complete ? "" : "+"));
        this.news2Flag.hidden = Boolean(news2.complete);
        this.news2El.title =
          "NEWS2 " + news2.total + ", " + (news2.risk || "") + " risk" +
          (news2.complete ? "" : " (incomplete: some parameters missing, the score may be higher)") +
          (news2.at ? ", at " + formatClock(parseTime(news2.at)) : "");
      } else {
        this.news2El.hidden = true;
      }
      if (!this.patient) {
        return;
      }
      let top = null;
      let previous = null;
      for (const entry of this.sortedAlerts()) {
        if (entry.changed) {
          renderBanner(entry, this);
          entry.changed = false;
        }
        const expected = previous ? previous.el.nextSibling : this.alertsEl.firstChild;
        if (expected !== entry.el) {
          this.alertsEl.insertBefore(entry.el, expected);
        }
        previous = entry;
        if (entry.data.state === "active" && !entry.data.technical && top === null) {
          top = entry.data.priority;
        }
      }
      this.tile.classList.remove("alarm-high", "alarm-medium", "alarm-low");
      if (top) {
        this.tile.classList.add("alarm-" + top);
      }
      this.renderStatus(nowMs);
    }

    renderStatus(nowMs) {
      if (!this.patient) {
        return;
      }
      let status = "";
      if (this.devices.length === 0 && this.lastSignalMs === null) {
        status = "NO DEVICE — not monitored";
      } else if (this.lastSignalMs === null || nowMs - this.lastSignalMs > state.staleAfterMs) {
        status =
          "NO DATA" + (this.lastSignalMs === null ? "" : " for " + formatAge(nowMs - this.lastSignalMs));
      }
      setText(this.statusText, status);
      const noData = status !== "";
      if (noData !== this.shownNoData) {
        this.statusEl.hidden = !noData;
        this.tile.classList.toggle("no-data", noData);
        this.shownNoData = noData;
      }
    }

    destroy() {
      for (const view of this.vitals.values()) {
        view.destroy();
      }
    }
  }

  // --- alert banners ---------------------------------------------------------------------------

  function buildBanner(alertId) {
    const el = element("div", "alert-banner");
    el.dataset.alert = alertId;
    el.setAttribute("role", "group");
    const parts = {};
    parts.priority = el.appendChild(element("span", "alert-priority"));
    parts.rule = el.appendChild(element("span", "alert-rule"));
    parts.message = el.appendChild(element("span", "alert-message"));
    parts.meta = el.appendChild(element("span", "alert-meta"));
    parts.cleared = el.appendChild(
      element("span", "alert-cleared", "cleared — awaiting acknowledgement"),
    );
    parts.button = el.appendChild(element("button", "ack", "Acknowledge"));
    parts.button.type = "button";
    parts.button.dataset.alert = alertId;
    parts.error = el.appendChild(element("span", "alert-error"));
    parts.error.setAttribute("role", "alert");
    return { el, parts, data: null, changed: true, error: "" };
  }

  function renderBanner(entry, bed) {
    const a = entry.data;
    const p = entry.parts;
    const el = entry.el;
    el.className = "alert-banner prio-" + a.priority;
    el.classList.toggle("technical", Boolean(a.technical));
    el.classList.toggle("acknowledged", a.state === "acknowledged");
    el.classList.toggle("active", a.state === "active");
    el.classList.toggle("condition-cleared", Boolean(a.condition_cleared));
    const label = a.technical
      ? a.rule_kind === "device_offline"
        ? "NO DATA"
        : "TECHNICAL"
      : PRIORITY_LABEL[a.priority] || a.priority;
    p.priority.textContent = label;
    p.rule.textContent = a.rule;
    p.message.textContent = a.message && a.message !== a.rule ? a.message : "";
    const meta = ["since " + formatClock(parseTime(a.fired_at))];
    if (a.escalation_level > 0) {
      meta.push("escalated, level " + a.escalation_level);
    }
    if (a.state === "acknowledged") {
      meta.push(
        "acknowledged" +
          (a.acknowledged_by ? " by " + a.acknowledged_by : "") +
          (a.acknowledged_at ? " at " + formatClock(parseTime(a.acknowledged_at)) : ""),
      );
    }
    p.meta.textContent = meta.join(" · ");
    p.cleared.hidden = !(a.condition_cleared && a.state === "active");
    const pending = state.pendingAcks.has(a.alert);
    p.button.hidden = a.state !== "active";
    p.button.disabled = pending || state.phase !== "live";
    p.button.textContent = pending ? "Acknowledging…" : "Acknowledge";
    p.button.setAttribute("aria-label", "Acknowledge " + a.rule + " on " + bed.label);
    p.error.textContent = entry.error || "";
    p.error.hidden = !entry.error;
    el.setAttribute("aria-label", label + " alert: " + a.rule + " on " + bed.label);
  }

  // --- rendering: one animation frame per batch ----------------------------------------------

  function scheduleRender() {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  function render() {
    frameRequested = false;
    const now = serverNow();
    for (const view of dirty.vitals) {
      view.render(now);
      view.bed.renderStatus(now);
    }
    dirty.vitals.clear();
    for (const bed of dirty.beds) {
      bed.render(now);
    }
    dirty.beds.clear();
    if (dirty.summary) {
      renderSummary();
      dirty.summary = false;
    }
    // Sparklines are the costly part: a few dozen per frame, the rest in the next frames.
    const clientNow = Date.now();
    let budget = SPARKLINES_PER_FRAME;
    let due = false;
    for (const spark of dirty.sparklines) {
      if (spark.plot === null || clientNow - spark.drawnAt >= SPARKLINE_REDRAW_MS) {
        if (budget === 0) {
          due = true;
          break;
        }
        spark.draw(now, sparklineWidth());
        dirty.sparklines.delete(spark);
        budget -= 1;
      }
    }
    if (due) {
      scheduleRender();
    }
  }

  // Every sparkline column has the same width (one grid template for all tiles): measure one,
  // once per layout, rather than forcing a layout per sparkline.
  let sparkWidth = 0;
  function sparklineWidth() {
    if (sparkWidth === 0) {
      const cell = grid.querySelector(".vitals .v-spark");
      sparkWidth = cell ? Math.max(40, Math.floor(cell.getBoundingClientRect().width)) : 0;
    }
    return sparkWidth || 96;
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      sparkWidth = 0;
      for (const bed of state.beds.values()) {
        for (const view of bed.vitals.values()) {
          if (view.spark !== null) {
            view.spark.drawnAt = 0;
            dirty.sparklines.add(view.spark);
          }
        }
      }
      scheduleRender();
    }, 200);
  });

  function renderSummary() {
    const counts = { high: 0, medium: 0, low: 0 };
    for (const bed of state.beds.values()) {
      for (const entry of bed.alerts.values()) {
        if (counts[entry.data.priority] !== undefined) {
          counts[entry.data.priority] += 1;
        }
      }
    }
    for (const [priority, el] of Object.entries(summaryEls)) {
      if (el) {
        el.querySelector(".count").textContent = String(counts[priority]);
        el.classList.toggle("zero", counts[priority] === 0);
      }
    }
  }

  // The 1 s timer: ages, NO DATA, the reconnect countdown, sparkline sliding, sound.
  function tick() {
    const now = serverNow();
    for (const bed of state.beds.values()) {
      for (const view of bed.vitals.values()) {
        view.renderAge(now);
      }
      bed.renderStatus(now);
      for (const view of bed.vitals.values()) {
        if (view.spark !== null && Date.now() - view.spark.drawnAt >= SPARKLINE_SLIDE_MS) {
          dirty.sparklines.add(view.spark);
        }
      }
    }
    if (dirty.sparklines.size) {
      scheduleRender();
    }
    if (state.phase === "waiting") {
      renderConnection();
    }
    if (
      state.socket !== null &&
      state.socket.readyState === WebSocket.OPEN &&
      state.lastMessageAt &&
      Date.now() - state.lastMessageAt > SILENCE_LIMIT_MS
    ) {
      dropConnection(); // half-open: nothing arrives, not even pongs
    }
    confirmSeq(true);
    sound.update();
  }

  // --- connection ----------------------------------------------------------------------------

  function setPhase(phase) {
    const wasLive = state.phase === "live";
    state.phase = phase;
    const live = phase === "live";
    if (wasLive && !live) {
      state.notLiveSince = Date.now();
    }
    root.classList.toggle("is-live", live);
    root.classList.toggle("not-live", !live);
    renderConnection();
    // Acknowledge buttons work only while live.
    for (const bed of state.beds.values()) {
      for (const entry of bed.alerts.values()) {
        entry.changed = true;
      }
      dirty.beds.add(bed);
    }
    scheduleRender();
  }

  function renderConnection() {
    let text;
    let kind;
    switch (state.phase) {
      case "live":
        text = "Connected — live";
        kind = "connected";
        break;
      case "connecting":
        text = state.everLive ? "Disconnected — reconnecting…" : "Connecting…";
        kind = state.everLive ? "disconnected" : "connecting";
        break;
      case "syncing":
        text = "Connected — synchronising…";
        kind = "connecting";
        break;
      case "waiting": {
        const seconds = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
        text = "Disconnected — reconnecting in " + seconds + " s";
        kind = "disconnected";
        break;
      }
      default:
        text = "Disconnected";
        kind = "disconnected";
    }
    setText(connectionText, text);
    connectionEl.dataset.state = kind;
    const live = state.phase === "live";
    staleBanner.hidden = live;
    staleBannerText.textContent =
      state.everLive || state.phase === "fatal"
        ? "DISCONNECTED — values may be out of date"
        : "CONNECTING — no live values yet";
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    const url = new URL(websocketUrl, window.location.href);
    if (state.lastSeq !== null) {
      url.searchParams.set("last_seq", String(state.lastSeq));
    }
    let socket;
    try {
      socket = new WebSocket(url.toString());
    } catch (error) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    setPhase("connecting");
    socket.onopen = () => {
      state.lastMessageAt = Date.now();
      setPhase("syncing");
    };
    socket.onmessage = (event) => {
      state.lastMessageAt = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      receive(message);
    };
    socket.onclose = (event) => onClose(socket, event.code);
  }

  function detach(socket) {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
  }

  function onClose(socket, code) {
    if (socket !== state.socket) {
      return;
    }
    detach(socket);
    state.socket = null;
    clearGapTimer();
    cancelPendingAcks();
    if (code === OUTDATED_CLOSE) {
      reloadOutdated();
      return;
    }
    const fatal = FATAL_CLOSES[code] || (state.fatalDetail ? FATAL_CLOSES[state.fatalDetail.code] : null);
    if (fatal) {
      showFatal(fatal);
      return;
    }
    if (code === RESYNC_CLOSE) {
      connect(); // our own close after a sequence gap: straight back with last_seq
      return;
    }
    if (code === TOO_SLOW_CLOSE) {
      forgetSequence(); // come back to a snapshot, not a replay of what overwhelmed us
    }
    scheduleReconnect();
  }

  // The new page speaks the server's protocol. A reload that did not help a minute ago is not
  // repeated: the page says it is out of date instead of reloading in a loop.
  function reloadOutdated() {
    let last = 0;
    try {
      last = Number(window.sessionStorage.getItem(OUTDATED_RELOAD_KEY) || 0);
      window.sessionStorage.setItem(OUTDATED_RELOAD_KEY, String(Date.now()));
    } catch (error) {
      last = Date.now(); // no storage: do not risk a reload loop
    }
    if (Date.now() - last > 60000) {
      window.location.reload();
      return;
    }
    showFatal(FATAL_CLOSES[OUTDATED_CLOSE]);
  }

  // Close a connection we no longer trust and go through the normal reconnect path.
  function dropConnection() {
    const socket = state.socket;
    if (socket === null) {
      return;
    }
    try {
      socket.close();
    } catch (error) {
      // already closing
    }
    onClose(socket, 1006);
  }

  function resync() {
    const socket = state.socket;
    if (socket === null) {
      return;
    }
    setPhase("syncing");
    try {
      socket.close(RESYNC_CLOSE, "resync");
    } catch (error) {
      // already closing
    }
    onClose(socket, RESYNC_CLOSE);
  }

  function scheduleReconnect() {
    // 1 s, 2 s, 4 s … 30 s, each ±25 % so a ward's screens do not reconnect in lockstep after
    // a server restart.
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
    const delay = Math.min(BACKOFF_MAX_MS, base * (0.75 + Math.random() * 0.5));
    state.attempt += 1;
    state.reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(connect, delay);
    setPhase("waiting");
  }

  function showFatal(fatal) {
    clearTimeout(state.reconnectTimer);
    setPhase("fatal");
    overlay.querySelector(".overlay-title").textContent = fatal.title;
    overlay.querySelector(".overlay-detail").textContent =
      (state.fatalDetail && state.fatalDetail.detail) || fatal.detail;
    const action = overlay.querySelector(".overlay-action");
    action.textContent = fatal.action;
    action.href = fatal.href;
    overlay.hidden = false;
    root.classList.add("is-fatal");
    action.focus();
  }

  function send(message) {
    if (state.socket !== null && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  // --- messages --------------------------------------------------------------------------------

  function receive(message) {
    switch (message.type) {
      case "snapshot":
        applySnapshot(message);
        break;
      case "replay":
        for (const event of message.events || []) {
          receiveEvent(event);
        }
        markLive();
        confirmSeq(true);
        break;
      case "vitals":
      case "alert":
      case "news2":
        receiveEvent(message);
        break;
      case "ack_result":
        applyAckResult(message);
        break;
      case "pong": {
        const serverMs = parseTime(message.server_time);
        if (serverMs !== null && state.pingSentAt) {
          const roundTrip = Date.now() - state.pingSentAt;
          if (roundTrip < 2000) {
            state.clockOffsetMs = serverMs - (state.pingSentAt + roundTrip / 2);
          }
        }
        break;
      }
      case "session_ended":
        state.fatalDetail = { code: 4401, detail: message.detail };
        break;
      case "access_revoked":
        state.fatalDetail = { code: 4403, detail: message.detail };
        break;
      default:
        break;
    }
  }

  function markLive() {
    state.attempt = 0;
    state.everLive = true;
    setPhase("live");
  }

  function applySnapshot(snapshot) {
    const serverMs = parseTime(snapshot.server_time);
    if (serverMs !== null) {
      state.clockOffsetMs = serverMs - Date.now();
    }
    state.catalogue = snapshot.vitals || {};
    if (typeof snapshot.stale_after_seconds === "number") {
      state.staleAfterMs = snapshot.stale_after_seconds * 1000;
    }
    state.haveSnapshot = true;
    state.lastSeq = typeof snapshot.seq === "number" ? snapshot.seq : 0;
    state.confirmedSeq = state.lastSeq; // the server counts the snapshot as confirmed
    state.appliedAbove.clear();
    clearGapTimer();
    state.alertSeq.clear();
    state.alertBed.clear();
    for (const bed of state.beds.values()) {
      bed.destroy();
    }
    state.beds.clear();
    state.patientBed.clear();
    dirty.vitals.clear();
    dirty.beds.clear();
    dirty.sparklines.clear();

    const fragment = document.createDocumentFragment();
    for (const data of snapshot.beds || []) {
      const bed = new BedView(data);
      state.beds.set(bed.id, bed);
      if (bed.patient) {
        state.patientBed.set(bed.patient.id, bed);
      }
      for (const alertId of bed.alerts.keys()) {
        state.alertSeq.set(alertId, state.lastSeq);
      }
      fragment.appendChild(bed.tile);
    }
    grid.replaceChildren(fragment);
    sparkWidth = 0;
    dirty.summary = true;

    const early = state.early;
    state.early = [];
    for (const event of early) {
      receiveEvent(event);
    }
    markLive();
    const high = Array.from(state.beds.values()).reduce(
      (n, bed) =>
        n + Array.from(bed.alerts.values()).filter((e) => isSounding(e.data, "high")).length,
      0,
    );
    if (high) {
      announce(high + " unacknowledged high-priority alert" + (high > 1 ? "s" : "") + " on this ward.");
    }
  }

  function receiveEvent(event) {
    if (!state.haveSnapshot) {
      state.early.push(event);
      return;
    }
    const seq = event.seq;
    if (typeof seq === "number") {
      if (seq <= state.lastSeq || state.appliedAbove.has(seq)) {
        return; // already applied (protocol: ignore seq <= last applied)
      }
      applyEvent(event);
      if (seq === state.lastSeq + 1) {
        state.lastSeq = seq;
        while (state.appliedAbove.has(state.lastSeq + 1)) {
          state.appliedAbove.delete(state.lastSeq + 1);
          state.lastSeq += 1;
        }
      } else {
        // Events may overtake each other by milliseconds: apply now, remember the gap.
        state.appliedAbove.set(seq, Date.now());
      }
      checkGap();
      confirmSeq(false);
    } else {
      applyEvent(event);
    }
    scheduleRender();
  }

  function checkGap() {
    clearGapTimer();
    if (state.appliedAbove.size === 0) {
      return;
    }
    // The missing seq (lastSeq + 1) is known missing since the first later event arrived.
    const since = Math.min(...state.appliedAbove.values());
    const wait = Math.max(0, since + GAP_TIMEOUT_MS - Date.now());
    state.gapTimer = setTimeout(() => {
      state.gapTimer = null;
      if (state.appliedAbove.size) {
        resync();
      }
    }, wait);
  }

  function clearGapTimer() {
    if (state.gapTimer !== null) {
      clearTimeout(state.gapTimer);
      state.gapTimer = null;
    }
  }

  function bedFor(event) {
    return state.patientBed.get(event.patient) || state.beds.get(event.bed) || null;
  }

  // A bed whose occupant changed since the snapshot (admission, transfer, discharge): its tile
  // describes the wrong patient, so fetch a fresh snapshot (rate-limited).
  function occupancyChanged() {
    if (Date.now() < state.resnapshotAfter) {
      return;
    }
    state.resnapshotAfter = Date.now() + 10000;
    forgetSequence();
    resync();
  }

  // The next connection asks for a snapshot (no last_seq).
  function forgetSequence() {
    state.lastSeq = null;
    state.confirmedSeq = null;
    state.haveSnapshot = false;
    state.appliedAbove.clear();
    state.early = [];
  }

  function confirmSeq(force) {
    if (state.phase !== "live" || state.lastSeq === null || state.lastSeq === state.confirmedSeq) {
      return;
    }
    if (force || state.lastSeq - (state.confirmedSeq || 0) >= CONFIRM_EVERY_EVENTS) {
      if (send({ type: "ack", seq: state.lastSeq })) {
        state.confirmedSeq = state.lastSeq;
      }
    }
  }

  function applyEvent(event) {
    if (event.type === "vitals") {
      // Grouped by bed: {bed, patient, vitals: {code: [value, observed_at epoch ms]}, artifact?}
      for (const entry of event.beds || []) {
        const bed = state.beds.get(entry.bed);
        if (!bed || !bed.patient || bed.patient.id !== entry.patient) {
          occupancyChanged();
          continue;
        }
        const artifact = Array.isArray(entry.artifact) ? entry.artifact : [];
        for (const [code, pair] of Object.entries(entry.vitals || {})) {
          // A value is [number, epoch ms]; anything else is skipped, never shown as a value.
          if (!Array.isArray(pair) || typeof pair[0] !== "number" || typeof pair[1] !== "number") {
            continue;
          }
          const [value, observedAtMs] = pair;
          const view = bed.vitals.get(code);
          if (view) {
            view.update(value, observedAtMs, artifact.includes(code));
            bed.noteSignal(view.observedAtMs);
          }
        }
      }
    } else if (event.type === "alert") {
      const known = state.alertSeq.get(event.alert);
      if (known !== undefined && event.seq <= known) {
        return; // an older transition that overtook a newer one
      }
      state.alertSeq.set(event.alert, event.seq);
      const bed = bedFor(event);
      if (event.state === "resolved" || event.event === "resolved") {
        const shown = state.alertBed.get(event.alert);
        if (shown) {
          shown.removeAlert(event.alert);
        }
      } else if (bed) {
        const data = Object.assign({}, event);
        for (const key of ["type", "seq", "ward", "event", "at"]) {
          delete data[key];
        }
        bed.upsertAlert(data);
        if (
          data.priority === "high" &&
          data.state === "active" &&
          (event.event === "fired" || event.event === "condition_returned")
        ) {
          const name = bed.patient ? ", " + bed.patient.name : "";
          announce("High priority alert, " + bed.label + name + ": " + (data.message || data.rule));
        }
      }
      if (event.event === "acknowledged" || event.state !== "active") {
        settleAck(event.alert);
      }
    } else if (event.type === "news2") {
      const bed = bedFor(event);
      if (bed && (bed.news2Seq === null || event.seq > bed.news2Seq)) {
        bed.news2 = { total: event.total, complete: event.complete, risk: event.risk, at: event.at };
        bed.news2Seq = event.seq;
        dirty.beds.add(bed);
      }
    }
  }

  // --- acknowledging ---------------------------------------------------------------------------

  function acknowledge(alertId) {
    const bed = state.alertBed.get(alertId);
    const entry = bed && bed.alerts.get(alertId);
    if (!entry || entry.data.state !== "active" || state.pendingAcks.has(alertId)) {
      return;
    }
    if (!send({ type: "acknowledge", alert: alertId })) {
      entry.error = "Not connected: not acknowledged.";
    } else {
      entry.error = "";
      state.pendingAcks.set(
        alertId,
        setTimeout(() => {
          settleAck(alertId, "No answer from the server: not acknowledged. Try again.");
        }, ACK_TIMEOUT_MS),
      );
    }
    entry.changed = true;
    dirty.beds.add(bed);
    scheduleRender();
  }

  function settleAck(alertId, error) {
    const timer = state.pendingAcks.get(alertId);
    if (timer !== undefined) {
      clearTimeout(timer);
      state.pendingAcks.delete(alertId);
    }
    const bed = state.alertBed.get(alertId);
    const entry = bed && bed.alerts.get(alertId);
    if (entry) {
      entry.error = error || "";
      entry.changed = true;
      dirty.beds.add(bed);
      scheduleRender();
    }
  }

  function cancelPendingAcks() {
    for (const alertId of Array.from(state.pendingAcks.keys())) {
      settleAck(alertId, "Connection lost: not confirmed. Acknowledge again once reconnected.");
    }
  }

  function applyAckResult(result) {
    if (result.ok) {
      // The ward's `acknowledged` alert event updates the banner; it may already have.
      if (state.pendingAcks.has(result.alert)) {
        settleAck(result.alert);
      }
      return;
    }
    settleAck(result.alert, result.detail || "Not acknowledged.");
  }

  grid.addEventListener("click", (event) => {
    const button = event.target.closest("button.ack");
    if (button && !button.disabled) {
      acknowledge(button.dataset.alert);
    }
  });

  // --- announcements ---------------------------------------------------------------------------

  function announce(text) {
    // Clearing first makes screen readers announce a repeated message again.
    announcer.textContent = "";
    setTimeout(() => {
      announcer.textContent = text;
    }, 50);
  }

  // --- sound -----------------------------------------------------------------------------------

  function isSounding(data, priority) {
    return data.priority === priority && data.state === "active";
  }

  const sound = {
    context: null,
    enabled: false,
    nextHighAt: 0,
    nextTechnicalAt: 0,
    playing: [],

    toggle() {
      if (!this.enabled) {
        const AudioContext = window.AudioContext || window.webkitAudioContext;
        if (!AudioContext) {
          soundButton.textContent = "Sound unavailable in this browser";
          soundButton.disabled = true;
          return;
        }
        if (this.context === null) {
          this.context = new AudioContext();
        }
        this.context.resume();
        this.enabled = true;
        this.nextHighAt = 0;
        this.nextTechnicalAt = 0;
      } else {
        this.enabled = false;
        this.silence();
      }
      this.renderButton();
      this.update();
    },

    renderButton() {
      soundButton.setAttribute("aria-pressed", String(this.enabled));
      soundButton.textContent = this.enabled ? "Sound on — click to mute" : "Enable sound";
      soundButton.classList.toggle("sound-on", this.enabled);
    },

    highActive() {
      for (const bed of state.beds.values()) {
        for (const entry of bed.alerts.values()) {
          if (isSounding(entry.data, "high")) {
            return true;
          }
        }
      }
      return false;
    },

    update() {
      if (!this.enabled || this.context === null) {
        return;
      }
      const now = this.context.currentTime;
      const high = this.highActive();
      const lostLink =
        state.everLive &&
        state.phase !== "live" &&
        Date.now() - state.notLiveSince > SOUND_DISCONNECTED_AFTER_MS;
      if (!high && !lostLink) {
        this.silence();
        return;
      }
      // The last known state still had an unacknowledged high alert while disconnected: keep
      // calling (clinical.md: alarm rather than stay silent).
      if (high && now >= this.nextHighAt) {
        // IEC 60601-1-8 style high-priority burst: 3 + 2 pulses, pause, 3 + 2 pulses.
        this.burst(now + 0.05, [0, 0.25, 0.5, 1.0, 1.25, 2.25, 2.5, 2.75, 3.25, 3.5], 660);
        this.nextHighAt = now + SOUND_HIGH_PERIOD_S;
      } else if (!high && lostLink && now >= this.nextTechnicalAt) {
        // Lost link to the server: a technical condition, a softer two-pulse call.
        this.burst(now + 0.05, [0, 0.4], 440);
        this.nextTechnicalAt = now + SOUND_TECHNICAL_PERIOD_S;
      }
    },

    burst(start, offsets, frequency) {
      const context = this.context;
      const master = context.createGain();
      master.gain.value = 0.2;
      master.connect(context.destination);
      for (const offset of offsets) {
        const at = start + offset;
        const oscillator = context.createOscillator();
        const envelope = context.createGain();
        oscillator.type = "square"; // harmonics make the tone easy to locate
        oscillator.frequency.value = frequency;
        envelope.gain.setValueAtTime(0, at);
        envelope.gain.linearRampToValueAtTime(1, at + 0.015);
        envelope.gain.setValueAtTime(1, at + 0.135);
        envelope.gain.linearRampToValueAtTime(0, at + 0.15);
        oscillator.connect(envelope).connect(master);
        oscillator.start(at);
        oscillator.stop(at + 0.16);
      }
      this.playing.push(master);
      const until = start + offsets[offsets.length - 1] + 0.5;
      setTimeout(() => {
        this.playing = this.playing.filter((node) => node !== master);
      }, (until - context.currentTime) * 1000);
    },

    silence() {
      // Acknowledged: stop the call at once, not at the end of the burst.
      for (const master of this.playing) {
        master.gain.cancelScheduledValues(0);
        master.gain.value = 0;
        master.disconnect();
      }
      this.playing = [];
      this.nextHighAt = 0;
      this.nextTechnicalAt = 0;
    },
  };

  if (soundButton) {
    soundButton.addEventListener("click", () => sound.toggle());
    sound.renderButton();
  }

  // --- start -------------------------------------------------------------------------------------

  function keepAlive() {
    if (state.phase === "fatal" || !root.dataset.keepaliveUrl) {
      return;
    }
    fetch(root.dataset.keepaliveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": root.dataset.csrfToken || "" },
    })
      .then((response) => {
        if (response.status === 401 && state.phase !== "fatal") {
          // The session is gone: say so now rather than wait for the socket to be closed.
          state.fatalDetail = { code: 4401, detail: null };
          const socket = state.socket;
          if (socket !== null) {
            detach(socket);
            state.socket = null;
            socket.close();
          }
          showFatal(FATAL_CLOSES[4401]);
        }
      })
      .catch(() => {
        // Network trouble shows on the socket; nothing more to say here.
      });
  }

  setInterval(tick, 1000);
  setInterval(keepAlive, KEEPALIVE_MS);
  setInterval(() => {
    if (state.phase === "live" && send({ type: "ping" })) {
      state.pingSentAt = Date.now();
    }
  }, PING_INTERVAL_MS);
  window.addEventListener("online", () => {
    if (state.phase === "waiting") {
      state.attempt = 0;
      connect();
    }
  });
  window.addEventListener("pagehide", () => {
    if (state.socket !== null) {
      detach(state.socket);
      state.socket.close();
      state.socket = null;
    }
  });
  root.dataset.dashboard = "ready";
  connect();
})();
