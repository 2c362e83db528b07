"use strict";
// ArqonBus dashboard (SPEC §19). Connects to the telemetry WebSocket of the
// listener that served it and renders the stream. No dependencies.
(function () {
  const AUTH = document.querySelector('meta[name="arqonbus-auth"]').content;
  const VERSION = document.querySelector('meta[name="arqonbus-version"]').content;
  const TOKEN_KEY = "arqonbus.dashboard.token";
  const WINDOW_MS = 5 * 60 * 1000;
  const MAX_FEED = 50;
  const $ = (id) => document.getElementById(id);

  const state = {
    socket: null,
    greeted: false,
    backoff: 500,
    retryTimer: null,
    samples: [], // {t, in, out}
  };

  $("server-version").textContent = "v" + VERSION;

  function setConn(kind, text) {
    const el = $("conn-state");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
  }
  function saveToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: keep it for this page only */ }
    memoryToken = value;
  }
  let memoryToken = token();

  function showAuth(message) {
    $("token-label").textContent = AUTH === "jwt" ? "Admin JWT" : "Admin token";
    $("auth-form").hidden = false;
    $("auth-message").textContent = message || "";
    $("token-input").focus();
  }

  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    saveToken(value);
    $("token-input").value = "";
    $("auth-form").hidden = true;
    state.backoff = 500;
    connect();
  });

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = scheme + "//" + location.host + "/";
    if (AUTH !== "none" && memoryToken) url += "?token=" + encodeURIComponent(memoryToken);
    return url;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (AUTH !== "none" && !memoryToken) {
      setConn("refused", "credential required");
      showAuth("");
      return;
    }
    setConn("connecting", "connecting…");
    state.greeted = false;
    let socket;
    try {
      socket = new WebSocket(socketUrl());
    } catch (_) {
      scheduleRetry();
      return;
    }
    state.socket = socket;
    socket.onmessage = (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch (_) { return; }
      if (frame && frame.payload) handle(frame.payload, frame);
    };
    socket.onclose = () => {
      if (state.socket !== socket) return;
      state.socket = null;
      if (!state.greeted && AUTH !== "none") {
        // A browser sees neither the status nor the body of a refused
        // upgrade: with auth on, a refusal before the greeting is taken as a
        // bad credential.
        saveToken("");
        setConn("refused", "refused");
        showAuth("refused: check the admin token");
        return;
      }
      scheduleRetry();
    };
  }

  function scheduleRetry() {
    const delay = state.backoff;
    state.backoff = Math.min(state.backoff * 2, 10000);
    setConn("retrying", "disconnected, retrying in " + Math.round(delay / 1000 * 10) / 10 + " s");
    state.retryTimer = setTimeout(connect, delay);
  }

  function handle(payload, frame) {
    switch (payload.eventType) {
      case "telemetry_connected":
        state.greeted = true;
        state.backoff = 500;
        setConn("live", "live");
        $("auth-form").hidden = true;
        setNumber("connections", payload.connections);
        $("rooms").textContent = payload.rooms;
        $("channels").textContent = payload.channels;
        if (payload.storage) setStorage(payload.storage.backend, payload.storage.degraded);
        break;
      case "stats":
        onStats(payload);
        break;
      case "storage_degraded":
        setStorage(payload.backend, true);
        pushFeed("errors", "storage_degraded " + payload.backend + ": " + payload.reason, frame);
        break;
      case "storage_recovered":
        setStorage(payload.backend, false);
        break;
      case "error":
        pushFeed("errors", payload.error_code + (payload.client_id ? " · " + payload.client_id : ""), frame);
        break;
      case "agent_activity": {
        const who = payload.screen_name || payload.client_id;
        const where = payload.room ? " " + payload.room + ":" + payload.channel : "";
        pushFeed("agent-feed", who + " " + payload.action + where, frame);
        break;
      }
      default:
        break;
    }
  }

  function setNumber(id, value, text) {
    const el = $(id);
    el.dataset.value = String(value);
    el.textContent = text !== undefined ? text : String(value);
  }

  function onStats(s) {
    setNumber("connections", s.connections);
    $("rooms").textContent = s.rooms;
    $("channels").textContent = s.channels;
    setNumber("rate-in", s.messages_in_per_sec, fmtRate(s.messages_in_per_sec));
    setNumber("rate-out", s.messages_out_per_sec, fmtRate(s.messages_out_per_sec));
    setNumber("latency-p50", s.route_latency_p50_us, fmtMicros(s.route_latency_p50_us));
    setNumber("latency-p99", s.route_latency_p99_us, fmtMicros(s.route_latency_p99_us));
    if (s.clients_by_type) renderByType(s.clients_by_type);
    if (s.top_channels) renderTopChannels(s.top_channels);
    if (s.storage) setStorage(s.storage.backend, s.storage.degraded);
    const now = Date.now();
    state.samples.push({ t: now, in: s.messages_in_per_sec, out: s.messages_out_per_sec });
    while (state.samples.length && state.samples[0].t < now - WINDOW_MS) state.samples.shift();
    drawChart();
  }

  function fmtRate(v) {
    return v >= 100 ? Math.round(v).toString() : (Math.round(v * 10) / 10).toString();
  }
  function fmtMicros(us) {
    return us >= 1000 ? (Math.round(us / 100) / 10) + " ms" : us + " µs";
  }

  function renderByType(byType) {
    const body = $("clients-by-type").tBodies[0];
    body.textContent = "";
    for (const kind of Object.keys(byType)) {
      const row = body.insertRow();
      row.dataset.clientType = kind;
      const th = document.createElement("th");
      th.textContent = kind;
      row.appendChild(th);
      const td = row.insertCell();
      td.className = "count";
      td.textContent = byType[kind];
    }
  }

  function renderTopChannels(top) {
    const body = $("top-channels").tBodies[0];
    body.textContent = "";
    for (const entry of top) {
      const row = body.insertRow();
      row.dataset.channel = entry.room + ":" + entry.channel;
      row.insertCell().textContent = entry.room + ":" + entry.channel;
      const members = row.insertCell();
      members.className = "num members";
      members.textContent = entry.members;
    }
    if (!top.length) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = 2;
      cell.className = "muted";
      cell.textContent = "no channels";
    }
  }

  function setStorage(backend, degraded) {
    const el = $("storage-state");
    el.dataset.backend = backend;
    el.dataset.degraded = String(!!degraded);
    el.textContent = backend + (degraded ? " — degraded" : " — ok");
    el.className = degraded ? "degraded" : "";
    const banner = $("storage-banner");
    banner.hidden = !degraded;
    banner.dataset.degraded = String(!!degraded);
  }

  function pushFeed(id, text, frame) {
    const list = $(id);
    const item = document.createElement("li");
    const time = document.createElement("time");
    const stamp = frame && frame.timestamp ? new Date(frame.timestamp) : new Date();
    time.textContent = stamp.toLocaleTimeString();
    item.appendChild(time);
    item.appendChild(document.createTextNode(text));
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_FEED) list.removeChild(list.lastChild);
  }

  function drawChart() {
    const canvas = $("rate-chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 300;
    const height = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const css = getComputedStyle(document.documentElement);
    const pad = { l: 40, r: 6, t: 8, b: 18 };
    const plotW = width - pad.l - pad.r;
    const plotH = height - pad.t - pad.b;
    let max = 1;
    for (const s of state.samples) max = Math.max(max, s.in, s.out);
    max = niceCeil(max);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = css.getPropertyValue("--muted");
    ctx.strokeStyle = css.getPropertyValue("--line");
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + plotH - (plotH * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + plotW, y);
      ctx.stroke();
      ctx.fillText(fmtRate((max * i) / 4), 2, y + 4);
    }
    ctx.fillText("-5 min", pad.l, height - 4);
    ctx.fillText("now", pad.l + plotW - 20, height - 4);
    const now = Date.now();
    const x = (t) => pad.l + plotW - ((now - t) / WINDOW_MS) * plotW;
    const y = (v) => pad.t + plotH - (v / max) * plotH;
    for (const [key, color] of [["in", "--in"], ["out", "--out"]]) {
      ctx.strokeStyle = css.getPropertyValue(color);
      ctx.lineWidth = 2;
      ctx.beginPath();
      state.samples.forEach((s, i) => {
        if (i === 0) ctx.moveTo(x(s.t), y(s[key]));
        else ctx.lineTo(x(s.t), y(s[key]));
      });
      ctx.stroke();
    }
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  window.addEventListener("resize", drawChart);
  drawChart();
  connect();
})();
