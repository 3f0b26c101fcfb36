// The supervisor dashboard: plain JavaScript, no build step, served from the package.
//
// Live data comes from one Server-Sent Events stream (GET /dashboard/events): an
// `event: hello` with the last 300 per-second points, then one frame a second
// ({status, series, alerts, errors}). Operator actions call the same /v1 API the
// command line uses, with the session cookie and the X-CSRF-Token header, so they
// are checked and audited exactly like their API calls.
//
// Server data is only ever written with textContent (never innerHTML): error
// messages, system names and reasons are text an attacker may have chosen.
"use strict";

(() => {
  /** Points kept per chart: 5 minutes at one a second. */
  const HISTORY = 300;
  /** A system whose error count grew within this many ms is shown as failing. */
  const FAILING_MS = 10000;
  /** No frame for this long: the stream is considered lost (frames come every second). */
  const STALL_MS = 5000;
  /** Reconnect back-off, ms. */
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 10000;
  const PHASES = ["development", "testing", "production"];
  /** Latest errors listed (the frame carries up to 20). */
  const RECENT_ERRORS = 12;
  /** Keys of /v1/status that the core writes; any other object-valued key is a
   * capability's section (status_sections) and is shown generically, as key/value text. */
  const CORE_KEYS = new Set([
    "phase", "tick", "tick_rate", "budget", "lateness", "work", "overruns", "dropped_ticks",
    "systems", "gauges", "errors", "quarantined", "profile", "profile_reason", "emergency_reason",
    "measured_tick_rate", "windows", "alive", "alive_detail", "ready", "not_ready", "next_step",
    "emergency", "lifecycle", "machine", "resources", "snapshots", "redaction", "services",
    "optimizer", "version", "pid", "uptime_seconds", "config_file", "listen",
  ]);
  /** Sections with a panel of their own. */
  const PANEL_KEYS = new Set(["fleet", "rollouts", "flags"]);
  /** Which rollout verbs an operator may press in each state (the server decides anyway). */
  const ROLLOUT_VERBS = { running: ["pause", "abort"], paused: ["resume", "abort"] };

  const session = { role: "viewer", csrf: "", name: "" };
  const series = { t: [], lateness_p50: [], lateness_p99: [], work_p50: [], work_p99: [] };
  const sysErrors = new Map();
  const sysRows = new Map();
  const charts = {};
  let source = null;
  let lastFrameAt = 0;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;

  const $ = (id) => document.getElementById(id);
  const pad = (n) => String(n).padStart(2, "0");

  // ---- formatting -------------------------------------------------------------

  function num(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  function ms(seconds) {
    const v = num(seconds);
    if (v === null) return "–";
    const m = v * 1000;
    return `${m >= 100 ? m.toFixed(0) : m.toPrecision(3)} ms`;
  }

  function duration(seconds) {
    const v = num(seconds);
    if (v === null) return "–";
    const s = Math.floor(v);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const parts = d ? [`${d}d`, `${h}h`, `${m}m`] : h ? [`${h}h`, `${m}m`] : [`${m}m`];
    return `${parts.join(" ")} ${s % 60}s`;
  }

  function bytes(v) {
    const b = num(v);
    if (b === null) return "–";
    return b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`;
  }

  function clock(unixSeconds) {
    const v = num(unixSeconds);
    if (v === null) return "–";
    const d = new Date(v * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function text(el, value) {
    const s = value === null || value === undefined ? "–" : String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  function cell(row, value, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    text(td, value);
    row.append(td);
    return td;
  }

  // ---- session ------------------------------------------------------------------

  function toLogin() {
    window.location.assign("/dashboard/login");
  }

  async function loadSession() {
    const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
    session.csrf = meta("supervisor-csrf");
    session.role = meta("supervisor-role") || session.role;
    try {
      const answer = await fetch("/dashboard/session", {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (answer.status === 401) {
        toLogin();
        return false;
      }
      if (answer.ok) {
        const s = await answer.json();
        if (typeof s.role === "string") session.role = s.role;
        if (typeof s.csrf === "string") session.csrf = s.csrf;
        if (typeof s.name === "string") session.name = s.name;
      }
    } catch {
      // The stream's reconnect loop shows the banner; the meta tags may be enough.
    }
    const operator = session.role === "operator";
    $("operator").classList.toggle("hidden", !operator);
    for (const el of document.querySelectorAll(".op-col")) el.classList.toggle("hidden", !operator);
    text($("role"), session.name ? `${session.name} (${session.role})` : session.role);
    return true;
  }

  /** End the session server-side (the cookie is HttpOnly: only the server can clear it). */
  async function logout() {
    let answer;
    try {
      answer = await fetch("/dashboard/logout", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": session.csrf },
      });
    } catch (err) {
      showResult(`Log out failed: no answer (${err}); the session is still open.`, true);
      return;
    }
    if (!answer.ok && answer.status !== 401) {
      showResult(`Log out failed: ${answer.status}; the session is still open.`, true);
      return;
    }
    toLogin();
  }

  // ---- operator actions -----------------------------------------------------------

  function showResult(message, failed) {
    const el = $("action-result");
    el.classList.remove("hidden");
    el.classList.toggle("failed", failed);
    text(el, message);
  }

  /** POST a JSON body to the API as the page's session; the answer as one line. */
  async function post(path, body) {
    let answer;
    try {
      answer = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf },
        body: JSON.stringify(body),
      });
    } catch (err) {
      return { ok: false, message: `${path}: no answer (${err})` };
    }
    let detail = "";
    try {
      const data = await answer.json();
      detail = typeof data.error === "string" ? data.error : JSON.stringify(data);
    } catch {
      detail = answer.statusText;
    }
    if (answer.status === 401) toLogin();
    return { ok: answer.ok, message: `${path}: ${answer.status} ${detail}` };
  }

  let pending = null;

  /** Ask for a reason and a confirmation in the dialog, then run `action(reason)`. */
  function confirmAction(title, description, action) {
    pending = action;
    text($("confirm-title"), title);
    text($("confirm-text"), description);
    $("confirm-reason").value = "";
    $("confirm-sure").checked = false;
    text($("confirm-error"), "");
    $("confirm").showModal();
    $("confirm-reason").focus();
  }

  async function onConfirm(event) {
    event.preventDefault();
    const reason = $("confirm-reason").value.trim();
    if (!reason) {
      $("confirm-error").textContent = "A reason is required (it goes to the audit log).";
      return;
    }
    if (!$("confirm-sure").checked) {
      $("confirm-error").textContent = "Tick “I am sure” to go on.";
      return;
    }
    const action = pending;
    pending = null;
    $("confirm").close();
    if (action) {
      const result = await action(reason);
      showResult(result.message, !result.ok);
    }
  }

  function wireActions() {
    $("logout").addEventListener("click", logout);
    $("confirm-form").addEventListener("submit", onConfirm);
    $("confirm-cancel").addEventListener("click", () => {
      pending = null;
      $("confirm").close();
    });
    $("btn-emergency").addEventListener("click", () =>
      confirmAction(
        "Emergency shutdown",
        "Stop ticking now, stop every system and write a snapshot. The process stays up until restart.",
        (reason) => post("/v1/shutdown", { emergency: true, reason }),
      ),
    );
    $("btn-restart").addEventListener("click", () =>
      confirmAction(
        "Restart",
        "Restart the world from its preserved state.",
        (reason) => post("/v1/restart", { reason }),
      ),
    );
    $("btn-phase").addEventListener("click", () => {
      const phase = $("phase-select").value;
      if (!PHASES.includes(phase)) return;
      confirmAction(
        `Change phase to ${phase}`,
        `Move the supervisor to ${phase}; entering production runs the readiness gate.`,
        (reason) => post("/v1/phase", { phase, reason }),
      );
    });
    $("systems").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const name = button.closest("tr").dataset.system;
      const verb = button.dataset.action;
      const path = `/v1/systems/${encodeURIComponent(name)}/${verb}`;
      confirmAction(
        `${verb === "quarantine" ? "Quarantine" : "Release"} ${name}`,
        verb === "quarantine"
          ? `Take ${name} out of the tick until an operator releases it.`
          : `Put ${name} back into the tick.`,
        (reason) => post(path, { reason }),
      );
    });
    $("rollouts").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const flag = button.closest("tr").dataset.flag;
      const verb = button.dataset.action;
      const what = {
        pause: `Hold the rollout of ${flag} at its current step (alert rules can still roll it back).`,
        resume: `Watch the current step of ${flag} again and go on with the next steps.`,
        abort: `Stop the rollout of ${flag}; the flag goes back to its percent before the rollout.`,
      }[verb];
      if (!what) return;
      confirmAction(
        `${verb[0].toUpperCase()}${verb.slice(1)} the rollout of ${flag}`,
        what,
        (reason) => post(`/v1/rollouts/${encodeURIComponent(flag)}/${verb}`, { reason }),
      );
    });
  }

  // ---- charts -----------------------------------------------------------------------

  /** Time-axis labels, 24-hour local clock (uPlot's default adds a crowding date row);
   * with seconds when the ticks are under a minute apart, so no two labels read the same. */
  const clockAxis = {
    space: 70, // px between labels: whole minutes on a 5-minute chart, no overlap
    values: (u, vals) => {
      const seconds = vals.length > 1 && vals[1] - vals[0] < 60;
      return vals.map((v) => {
        const d = new Date(v * 1000);
        const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
        return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
      });
    },
  };

  function chartOptions(el, labels, colors) {
    return {
      width: Math.max(300, el.clientWidth - 8),
      height: el.classList.contains("small") ? 130 : 210,
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [clockAxis, { size: 60, values: (u, vals) => vals.map((v) => `${v} ms`) }],
      series: [
        {},
        ...labels.map((label, i) => ({
          label,
          stroke: colors[i],
          width: 1.5,
          spanGaps: false,
          value: (u, v) => (v === null || v === undefined ? "–" : `${v.toPrecision(3)} ms`),
        })),
      ],
    };
  }

  function makeCharts() {
    if (typeof window.uPlot !== "function") return;
    const make = (id, labels, colors) => {
      const el = $(id);
      const data = [[], ...labels.map(() => [])];
      charts[id] = new window.uPlot(chartOptions(el, labels, colors), data, el);
    };
    make("chart-lateness", ["lateness p50", "lateness p99"], ["#2f5bd3", "#b42318"]);
    make("chart-work", ["work p50", "work p99"], ["#067647", "#9a6700"]);
    const el = $("chart-errors");
    const bars = window.uPlot.paths?.bars ? window.uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
    charts["chart-errors"] = new window.uPlot(
      {
        width: Math.max(300, el.clientWidth - 8),
        height: 130,
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        // Whole minutes on the time axis: one bar per minute.
        axes: [{ ...clockAxis, incrs: [60, 120, 300, 600, 900, 1800, 3600] }, { size: 50 }],
        series: [{}, { label: "errors / min", stroke: "#b42318", fill: "#b4231855", paths: bars }],
      },
      [[], []],
      el,
    );
    window.addEventListener("resize", () => {
      for (const [id, chart] of Object.entries(charts)) {
        chart.setSize({ width: Math.max(300, $(id).clientWidth - 8), height: chart.height });
      }
    });
  }

  function toMs(v) {
    const x = num(v);
    return x === null ? null : x * 1000;
  }

  function pushPoint(point) {
    const t = num(point?.t);
    if (t === null) return;
    const last = series.t.length ? series.t[series.t.length - 1] : -Infinity;
    if (t <= last) return; // a repeated second (a reconnect's history overlaps the frames)
    // A second in which no tick ended (ticks 0) is a gap in the chart, not a zero.
    const empty = point.ticks === 0;
    for (const key of Object.keys(series)) {
      series[key].push(key === "t" ? t : empty ? null : toMs(point[key]));
      if (series[key].length > HISTORY) series[key].shift();
    }
  }

  function redrawSeries() {
    charts["chart-lateness"]?.setData([series.t, series.lateness_p50, series.lateness_p99]);
    charts["chart-work"]?.setData([series.t, series.work_p50, series.work_p99]);
  }


  function renderTrend(trend) {
    const chart = charts["chart-errors"];
    if (!chart || !Array.isArray(trend)) return;
    const xs = [];
    const ys = [];
    for (const item of trend) {
      const t = num(item?.t);
      if (t === null) continue;
      xs.push(t);
      ys.push(num(item.count) ?? 0);
    }
    chart.setData([xs, ys]);
  }

  // ---- rendering ------------------------------------------------------------------------

  function renderHeader(s) {
    const phase = typeof s.phase === "string" ? s.phase : "unknown";
    const badge = $("phase");
    text(badge, phase.replace("_", " "));
    badge.className = `phase phase-${phase.replace(/[^a-z_]/g, "")}`;
    text($("uptime"), duration(s.uptime_seconds));
    text($("tick"), num(s.tick) ?? "–");
    const set = num(s.tick_rate);
    const measured = num(s.measured_tick_rate);
    text($("rate"), `${set ?? "–"} / ${measured ?? "–"} Hz`);
    const w = s.windows?.["10s"];
    text($("lateness"), ms(w?.lateness?.p99 ?? s.lateness?.p99));
    text($("work"), ms(w?.work?.p99 ?? s.work?.p99));
    text($("ready"), s.ready ? "ready" : `not ready: ${(s.not_ready ?? []).join(", ")}`);
    text($("next-step"), s.next_step ?? "");
    const emergency = $("emergency");
    const reason = s.emergency_reason;
    emergency.classList.toggle("hidden", !reason && phase !== "emergency_shutdown");
    text(emergency, `EMERGENCY SHUTDOWN${reason ? `: ${reason}` : ""}`);
    const choice = $("phase-select");
    if (document.activeElement !== choice && PHASES.includes(phase)) choice.value = phase;
  }

  /** The operator-only last cell of a row: one small button per verb (data-action). */
  function actionCell(row, verbs) {
    const actions = cell(row, "", "op-col");
    actions.textContent = "";
    for (const verb of verbs) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "small";
      b.dataset.action = verb;
      b.textContent = verb;
      actions.append(b);
    }
    actions.classList.toggle("hidden", session.role !== "operator");
  }

  function systemRow(name) {
    let row = sysRows.get(name);
    if (row) return row;
    row = document.createElement("tr");
    row.dataset.system = name;
    for (let i = 0; i < 8; i += 1) cell(row, "");
    actionCell(row, ["quarantine", "release"]);
    sysRows.set(name, row);
    return row;
  }

  function renderSystems(s) {
    const body = $("systems").tBodies[0];
    const now = Date.now();
    const seen = new Set();
    const throttles = s.optimizer?.throttles ?? {};
    const rows = [];
    for (const sys of Array.isArray(s.systems) ? s.systems : []) {
      const name = String(sys.name);
      seen.add(name);
      const errors = num(sys.errors) ?? 0;
      const before = sysErrors.get(name);
      const changedAt = before && errors > before.count ? now : (before?.changedAt ?? 0);
      sysErrors.set(name, { count: errors, changedAt: before ? changedAt : 0 });
      const state = String(sys.state ?? "");
      const failing = now - changedAt < FAILING_MS;
      const bad =
        state.startsWith("quarantined") || state === "retrying" || sys.health === "unhealthy" || failing;
      const row = systemRow(name);
      row.className = bad ? "bad" : sys.health === "degraded" ? "warn" : "";
      const c = row.cells;
      text(c[0], name + (sys.critical ? " (critical)" : ""));
      text(c[1], failing && state === "running" ? "running (failing)" : state);
      text(c[2], sys.health);
      text(c[3], ms(sys.step?.p50));
      text(c[4], ms(sys.step?.p99));
      const every = num(sys.every) ?? 1;
      text(c[5], every > 1 ? `every ${every} ticks` : name in throttles ? String(throttles[name]) : "—");
      text(c[6], errors);
      text(c[7], bytes(sys.memory_bytes ?? sys.memory ?? sys.rss_bytes));
      rows.push(row);
    }
    for (const name of [...sysRows.keys()]) {
      if (!seen.has(name)) {
        sysRows.get(name).remove();
        sysRows.delete(name);
      }
    }
    rows.forEach((row, i) => {
      if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] ?? null);
    });
  }

  function renderGauges(s) {
    const body = $("gauges").tBodies[0];
    const entries = Object.entries(s.gauges ?? {}).sort(([a], [b]) =>
      a === "players" ? -1 : b === "players" ? 1 : a.localeCompare(b),
    );
    const res = s.resources ?? {};
    if ("rss_bytes" in res) entries.push(["process RSS", bytes(res.rss_bytes)]);
    if ("cpu_percent" in res) entries.push(["process CPU", `${res.cpu_percent} %`]);
    const rows = entries.map(([key, value]) => {
      const row = document.createElement("tr");
      cell(row, key);
      cell(row, typeof value === "number" ? Number(value.toPrecision(6)) : value);
      return row;
    });
    body.replaceChildren(...rows);
  }

  function renderAlerts(alerts) {
    const list = $("alerts");
    const items = (Array.isArray(alerts) ? alerts : []).map((a) => {
      const li = document.createElement("li");
      if (typeof a === "string") {
        li.className = "firing";
        li.textContent = a;
        return li;
      }
      const state = String(a.state ?? "firing");
      li.className = state;
      const parts = [`${a.rule ?? a.name ?? "?"}`, state];
      if (a.severity) parts.push(String(a.severity));
      if (a.when) parts.push(String(a.when));
      if (num(a.value) !== null) parts.push(`now ${Number(a.value.toPrecision(4))}`);
      li.textContent = parts.join(" · ");
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "nothing firing";
      items.push(li);
    }
    list.replaceChildren(...items);
  }

  function renderErrors(errors) {
    const recent = Array.isArray(errors?.recent) ? errors.recent : [];
    const rows = recent.slice(0, RECENT_ERRORS).map((r) => {
      const row = document.createElement("tr");
      cell(row, clock(r.time));
      cell(row, r.tick);
      cell(row, r.system);
      cell(row, r.exc_type ?? r.kind);
      cell(row, r.message, "msg");
      return row;
    });
    $("errors").tBodies[0].replaceChildren(...rows);
    renderTrend(errors?.trend);
  }

  /** The fleet's member table: a heading and how each member's cell reads (as `fleet status`). */
  const MEMBER_COLUMNS = [
    ["id", (m) => m.id],
    ["host", (m) => m.host],
    ["phase", (m) => (typeof m.phase === "string" ? m.phase.replace("_", " ") : m.phase)],
    ["tick rate", (m) => `${fixed(m.measured_tick_rate, 1)}/${plain(m.tick_rate)}`],
    ["lateness p99", (m) => withUnit(m.lateness_p99_ms, 2, "ms")],
    ["players", (m) => fixed(m.players, 0)],
    ["errors", (m) => fixed(m.errors, 0)],
    ["heartbeat", (m) => withUnit(m.age, 1, "s ago")],
  ];

  function fixed(v, digits) {
    return num(v) === null ? "–" : v.toFixed(digits);
  }

  function withUnit(v, digits, unit) {
    return num(v) === null ? "–" : `${v.toFixed(digits)} ${unit}`;
  }

  /** The registry as this member last read it: one row per member (a record that is not one
   * is a red row with its problem), and how many there are when the list is cut. */
  function memberTable(fleet) {
    const members = Array.isArray(fleet.members) ? fleet.members : [];
    const table = headedTable(MEMBER_COLUMNS.map(([head]) => head));
    table.id = "fleet-members";
    const tbody = table.tBodies[0];
    for (const m of members) {
      if (!m || typeof m !== "object") continue;
      const row = tbody.insertRow();
      if (m.id === fleet.id) row.className = "self";
      if (m.problem) {
        row.className = "bad";
        cell(row, plain(m.id));
        cell(row, plain(m.problem)).colSpan = MEMBER_COLUMNS.length - 1;
        continue;
      }
      if (m.phase === "emergency_shutdown") row.className = "bad";
      for (const [, read] of MEMBER_COLUMNS) cell(row, plain(read(m)));
    }
    const total = num(fleet.members_total);
    const note = document.createElement("p");
    note.className = "muted";
    note.id = "fleet-members-note";
    note.textContent =
      total === null
        ? "members: not read yet"
        : total > members.length
          ? `first ${members.length} of ${total} members by id (supervisor fleet status lists them all)`
          : `${total} member${total === 1 ? "" : "s"}`;
    return tbody.rows.length ? [table, note] : [note];
  }

  function renderFleet(s) {
    const fleet = s.fleet;
    const section = $("fleet");
    section.classList.toggle("hidden", !fleet || typeof fleet !== "object");
    if (!fleet || typeof fleet !== "object") return;
    const facts = document.createElement("table");
    const tbody = facts.createTBody();
    for (const [k, v] of Object.entries(fleet)) {
      if (k === "members") continue;
      const row = tbody.insertRow();
      row.dataset.key = k;
      // The session's state and its last error are what an operator looks for first.
      if ((k === "last_error" || k === "registry_error") && v) row.className = "bad";
      if (k === "state" && v !== "connected") row.className = "warn";
      cell(row, k);
      cell(row, v !== null && typeof v === "object" ? JSON.stringify(v) : v);
    }
    $("fleet-body").replaceChildren(...memberTable(fleet), facts);
  }

  /** A section's value as one line of text (nested objects as JSON): never markup. */
  function plain(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isFinite(v) ? String(Number(v.toPrecision(6))) : "–";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function headedTable(heads) {
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const h of heads) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    table.createTBody();
    return table;
  }

  function rolloutRow(r) {
    const row = document.createElement("tr");
    const flag = String(r.flag ?? "");
    const state = String(r.state ?? "");
    row.dataset.flag = flag;
    row.className = state === "rolled_back" ? "bad" : state === "paused" ? "warn" : "";
    const steps = Array.isArray(r.steps) ? r.steps : [];
    const k = num(r.step);
    cell(row, flag);
    cell(row, state.replace("_", " "));
    cell(row, num(r.percent) === null ? "–" : `${plain(r.percent)} %`);
    cell(row, k === null ? "–" : `${k + 1}/${steps.length} (${steps.map(plain).join(" → ")} %)`);
    cell(row, num(r.next_step_in) === null ? "–" : duration(r.next_step_in));
    cell(row, Array.isArray(r.rollback_on) && r.rollback_on.length ? r.rollback_on.join(", ") : "–");
    cell(row, r.reason || "–", "msg");
    actionCell(row, ROLLOUT_VERBS[state] ?? []);
    return row;
  }

  /** Rollouts (status.rollouts): one row per flag; operator buttons fit the state. */
  function renderRollouts(s) {
    const section = s.rollouts && typeof s.rollouts === "object" ? s.rollouts : {};
    const rollouts = Array.isArray(section.rollouts) ? section.rollouts : [];
    const problems = Array.isArray(section.problems) ? section.problems : [];
    $("rollouts-panel").classList.toggle("hidden", !rollouts.length && !problems.length && !s.flags);
    // Rebuild only on change: a button under the pointer must not be replaced every second.
    const key = JSON.stringify([rollouts.map((r) => ({ ...r, watched: 0, next_step_in: 0 })), session.role]);
    const body = $("rollouts").tBodies[0];
    if (body.dataset.key !== key) {
      body.dataset.key = key;
      body.replaceChildren(...rollouts.map(rolloutRow));
    }
    rollouts.forEach((r, i) => {
      const c = body.rows[i]?.cells[4];
      if (c) text(c, num(r.next_step_in) === null ? "–" : duration(r.next_step_in));
    });
    $("rollout-problems").replaceChildren(
      ...problems.map((p) => {
        const li = document.createElement("li");
        li.textContent = String(p);
        return li;
      }),
    );
  }

  function experimentBlock(exp) {
    const block = document.createElement("div");
    block.className = "experiment";
    const h = document.createElement("h3");
    h.textContent = `experiment ${exp.name}${exp.enabled === false ? " (disabled)" : ""}`;
    block.append(h);
    const comparisons = new Map(
      (Array.isArray(exp.comparisons) ? exp.comparisons : []).map((c) => [c.arm, c]),
    );
    const table = headedTable([
      "arm", "players", "player-minutes", "errors", "errors / player-min", "p vs control", "significant",
    ]);
    const arms = Array.isArray(exp.arms) ? exp.arms : [];
    arms.forEach((a, i) => {
      const row = table.tBodies[0].insertRow();
      row.dataset.arm = String(a.arm);
      const c = comparisons.get(a.arm);
      if (c?.significant) row.className = "bad";
      cell(row, a.arm);
      cell(row, plain(a.players));
      cell(row, num(a.player_minutes) === null ? "–" : a.player_minutes.toFixed(1));
      cell(row, plain(a.errors));
      cell(row, num(a.errors_per_player_minute) === null ? "–" : a.errors_per_player_minute.toPrecision(3));
      cell(row, i === 0 ? "control" : num(c?.p) === null ? "–" : c.p.toPrecision(3));
      cell(row, i === 0 ? "–" : c?.significant ? "yes" : "no");
    });
    block.append(table);
    const steps = (Array.isArray(exp.systems) ? exp.systems : []).map(
      (x) => `${x.name}: step p50 ${ms(x.step?.p50_ms / 1000)}, p99 ${ms(x.step?.p99_ms / 1000)}`,
    );
    if (steps.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = `Step time of the systems that read it — ${steps.join("; ")}`;
      block.append(p);
    }
    return block;
  }

  /** Flags and experiments from status.flags (the same view as GET /v1/experiments). */
  function renderExperiments(s) {
    const data = s.flags && typeof s.flags === "object" ? s.flags : null;
    $("experiments-panel").classList.toggle("hidden", !data);
    if (!data) return;
    const flags = Array.isArray(data.flags) ? data.flags : [];
    $("flags").tBodies[0].replaceChildren(
      ...flags.map((f) => {
        const row = document.createElement("tr");
        row.dataset.flag = String(f.name);
        cell(row, f.name + (f.runtime_percent ? " (set at run time)" : ""));
        cell(row, f.enabled ? "yes" : "no");
        cell(row, `${plain(f.percent)} %`);
        cell(row, Array.isArray(f.segments) && f.segments.length ? f.segments.join(", ") : "–");
        return row;
      }),
    );
    const experiments = Array.isArray(data.experiments) ? data.experiments : [];
    const blocks = experiments.map(experimentBlock);
    if (blocks.length && typeof data.test === "string") {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = `Test: ${data.test}; significant when p < ${plain(data.significance)}.`;
      blocks.push(p);
    }
    $("experiments").replaceChildren(...blocks);
  }

  /** Any other capability's section (agones, realtime, reload, memory...) as key/value text. */
  function renderCapabilities(s) {
    const blocks = [];
    for (const [name, value] of Object.entries(s)) {
      if (CORE_KEYS.has(name) || PANEL_KEYS.has(name)) continue;
      if (!value || typeof value !== "object" || Array.isArray(value)) continue;
      const block = document.createElement("div");
      block.dataset.section = name;
      const h = document.createElement("h3");
      h.textContent = name;
      const table = document.createElement("table");
      const tbody = table.createTBody();
      for (const [k, v] of Object.entries(value)) {
        const row = tbody.insertRow();
        cell(row, k);
        cell(row, plain(v), "msg");
      }
      if ("error" in value) block.className = "broken";
      block.append(h, table);
      blocks.push(block);
    }
    $("capabilities").classList.toggle("hidden", !blocks.length);
    $("capabilities-body").replaceChildren(...blocks);
  }

  function renderStatus(s) {
    if (!s || typeof s !== "object") return;
    renderHeader(s);
    renderSystems(s);
    renderGauges(s);
    renderFleet(s);
    renderRollouts(s);
    renderExperiments(s);
    renderCapabilities(s);
  }

  function onFrame(frame) {
    lastFrameAt = Date.now();
    retryMs = RETRY_MIN_MS;
    $("banner").classList.add("hidden");
    renderStatus(frame.status);
    if (frame.series) {
      pushPoint(frame.series);
      redrawSeries();
    }
    if ("alerts" in frame) renderAlerts(frame.alerts);
    if ("errors" in frame) renderErrors(frame.errors);
  }

  // ---- the stream ----------------------------------------------------------------------

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  }

  function lost(why) {
    const banner = $("banner");
    text(banner, `Connection lost (${why}): reconnecting…`);
    banner.classList.remove("hidden");
  }

  function scheduleReconnect() {
    if (retryTimer !== null) return;
    const wait = retryMs;
    retryMs = Math.min(RETRY_MAX_MS, retryMs * 2);
    retryTimer = window.setTimeout(async () => {
      retryTimer = null;
      if (await loadSession()) connect();
    }, wait);
  }

  function connect() {
    if (source) source.close();
    lastFrameAt = Date.now(); // a stream that never says hello is retried by the watchdog
    source = new EventSource("/dashboard/events", { withCredentials: true });
    // hello: {interval, history: [POINT, ...] oldest first, frame: FRAME or null}; then
    // one `frame` event a second. A reconnect's hello replaces the history.
    source.addEventListener("hello", (event) => {
      const hello = parse(event);
      if (!hello) return;
      for (const key of Object.keys(series)) series[key].length = 0;
      for (const point of Array.isArray(hello.history) ? hello.history : []) pushPoint(point);
      redrawSeries();
      lastFrameAt = Date.now();
      retryMs = RETRY_MIN_MS;
      $("banner").classList.add("hidden");
      if (hello.frame) onFrame(hello.frame);
    });
    source.addEventListener("frame", (event) => {
      const frame = parse(event);
      if (frame) onFrame(frame);
    });
    source.addEventListener("error", () => {
      lost("stream interrupted");
      if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    });
  }

  function watchdog() {
    if (lastFrameAt && Date.now() - lastFrameAt > STALL_MS) {
      lost(`no update for ${Math.round((Date.now() - lastFrameAt) / 1000)} s`);
      if (source) source.close();
      scheduleReconnect();
    }
  }

  async function start() {
    wireActions();
    makeCharts();
    renderAlerts([]);
    if (!(await loadSession())) return;
    connect();
    window.setInterval(watchdog, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
