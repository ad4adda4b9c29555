// stemdae listening test page: MUSHRA (ITU-R BS.1534-3) with the Web Audio API.
// Every stimulus of a trial plays at once, in sync, each through its own gain;
// switching sets one gain to 1 and the others to 0 with a 5 ms ramp, so it is
// instant, gap-free and keeps the position. The loop region restarts all of them.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { listener: null, session: null, trial: null, player: null, ratings: {}, plays: {},
                moved: new Set(), started: 0 };

async function api(method, url, body) {
  const r = await fetch(url, { method, headers: { "Content-Type": "application/json" },
                               body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || `${r.status} ${r.statusText}`);
  return data;
}

function show(view) {
  for (const v of ["start", "training", "trial", "done"]) $(`view-${v}`).hidden = v !== view;
}

class Player {
  constructor() {
    this.ctx = new (window.AudioContext || window.webkitAudioContext)();
    this.buffers = {}; this.sources = {}; this.gains = {};
    this.active = null; this.playing = false; this.loop = [0, 1]; this.t0 = 0; this.onswitch = null;
  }
  async load(urls) {
    const entries = await Promise.all(Object.entries(urls).map(async ([key, url]) => {
      const r = await fetch(url);
      if (!r.ok) throw new Error(`audio ${key}: ${r.status}`);
      return [key, await this.ctx.decodeAudioData(await r.arrayBuffer())];
    }));
    this.buffers = Object.fromEntries(entries);
    this.duration = Math.min(...Object.values(this.buffers).map((b) => b.duration));
    this.loop = [0, this.duration];
  }
  start(key) {
    this.stopSources();
    const when = this.ctx.currentTime + 0.03;
    for (const [k, buf] of Object.entries(this.buffers)) {
      const src = this.ctx.createBufferSource();
      const g = this.ctx.createGain();
      src.buffer = buf; src.loop = true; src.loopStart = this.loop[0]; src.loopEnd = this.loop[1];
      g.gain.value = k === key ? 1 : 0;
      src.connect(g).connect(this.ctx.destination);
      src.start(when, this.loop[0]);
      this.sources[k] = src; this.gains[k] = g;
    }
    this.t0 = when; this.playing = true; this.active = key;
  }
  play(key) {
    if (this.ctx.state === "suspended") this.ctx.resume();
    if (!this.playing) this.start(key);
    else if (key !== this.active) {
      const now = this.ctx.currentTime;
      for (const [k, g] of Object.entries(this.gains)) {
        g.gain.cancelScheduledValues(now);
        g.gain.setValueAtTime(g.gain.value, now);
        g.gain.linearRampToValueAtTime(k === key ? 1 : 0, now + 0.005);
      }
      this.active = key;
    }
    if (this.onswitch) this.onswitch(key);
  }
  stopSources() {
    for (const s of Object.values(this.sources)) { try { s.stop(); } catch (e) { /* not started */ } }
    this.sources = {}; this.gains = {};
  }
  stop() { this.stopSources(); this.playing = false; this.active = null; if (this.onswitch) this.onswitch(null); }
  setLoop(a, b) {
    this.loop = [a, b];
    if (this.playing) this.start(this.active);
  }
  position() {
    if (!this.playing) return null;
    const len = this.loop[1] - this.loop[0];
    return this.loop[0] + ((this.ctx.currentTime - this.t0) % len + len) % len;
  }
  close() { this.stopSources(); this.ctx.close(); }
}

function markButtons(container, key) {
  for (const b of container.querySelectorAll("button[data-key]")) {
    b.classList.toggle("active", b.dataset.key === key);
    if (b.dataset.key === key) b.classList.add("played");
  }
}

function updateProgress() {
  const s = state.session;
  const n = s.order.length, done = s.done.length;
  $("progress-box").hidden = false;
  $("progress-text").textContent = done < n ? `Trial ${done + 1} of ${n}` : `${n} of ${n} done`;
  $("progress-bar").style.width = `${(100 * done) / n}%`;
}

async function startSession() {
  const id = $("listener").value.trim();
  $("start-error").textContent = "";
  try {
    state.session = await api("POST", "/api/session", { listener_id: id });
  } catch (e) { $("start-error").textContent = e.message; return; }
  state.listener = id;
  localStorage.setItem("stemdae-listener", id);
  $("test-name").textContent = state.session.test;
  updateProgress();
  if (!state.session.training_done) await showTraining();
  else await nextTrial();
}

async function showTraining() {
  show("training");
  const tr = state.session.training;
  const t = await api("GET", `/api/trial/${state.listener}/${tr.trial_id}`);
  const box = $("train-buttons");
  box.innerHTML = "";
  for (const k of t.keys) {
    const b = document.createElement("button");
    b.textContent = k; b.dataset.key = k; b.className = "train-cond";
    box.appendChild(b);
  }
  const player = newPlayer($("view-training"));
  await player.load({ ref: t.reference, ...t.audio });
  const heard = new Set();
  player.onswitch = (key) => {
    markButtons($("view-training"), key);
    if (key) heard.add(key);
    $("training-done").disabled = !["ref", ...t.keys].every((k) => heard.has(k));
  };
  for (const b of $("view-training").querySelectorAll("button[data-key]")) b.onclick = () => player.play(b.dataset.key);
  $("train-stop").onclick = () => player.stop();
  $("training-done").onclick = async () => {
    player.stop();
    await api("POST", `/api/training/${state.listener}`);
    await nextTrial();
  };
}

function newPlayer() {
  if (state.player) state.player.close();
  state.player = new Player();
  return state.player;
}

function buildScale() {
  const scale = $("scale");
  scale.innerHTML = "";
  for (const l of state.session.labels) {
    const d = document.createElement("div");
    d.textContent = l.label;
    scale.appendChild(d);
  }
}

function buildColumns(keys) {
  const cols = $("columns");
  cols.innerHTML = "";
  for (const k of keys) {
    const col = document.createElement("div");
    col.className = "column";
    col.innerHTML = `<button data-key="${k}" class="cond-button">${k}</button>
      <input type="range" min="0" max="100" step="1" value="50" class="slider" data-key="${k}" aria-label="rating ${k}">
      <span class="value">50</span>`;
    const slider = col.querySelector("input"), value = col.querySelector(".value");
    slider.addEventListener("input", () => {
      state.ratings[k] = Number(slider.value); state.moved.add(k);
      value.textContent = slider.value; value.classList.add("moved");
      $("submit").disabled = state.moved.size !== keys.length;
    });
    cols.appendChild(col);
  }
}

async function nextTrial() {
  const s = state.session;
  const next = s.order.find((t) => !s.done.includes(t));
  updateProgress();
  if (!next) { if (state.player) state.player.stop(); show("done"); return; }
  show("trial");
  const t = await api("GET", `/api/trial/${state.listener}/${next}`);
  state.trial = t; state.ratings = {}; state.moved = new Set(); state.started = Date.now() / 1000;
  state.plays = Object.fromEntries(t.keys.map((k) => [k, 0]));
  state.plays.ref = 0;
  buildScale();
  buildColumns(t.keys);
  $("submit").disabled = true;
  $("trial-error").textContent = "";
  const player = newPlayer();
  await player.load({ ref: t.reference, ...t.audio });
  $("loop-start").value = 0; $("loop-end").value = 1000;
  updateLoop();
  player.onswitch = (key) => { markButtons($("view-trial"), key); if (key) state.plays[key] += 1; };
  for (const b of $("view-trial").querySelectorAll("button[data-key]")) b.onclick = () => player.play(b.dataset.key);
  document.body.dataset.trial = t.trial_id;  // for tests and screen readers: which trial is shown
}

function updateLoop() {
  const p = state.player;
  if (!p || !p.duration) return;
  let a = Number($("loop-start").value) / 1000 * p.duration, b = Number($("loop-end").value) / 1000 * p.duration;
  if (b - a < 0.2) { b = Math.min(p.duration, a + 0.2); a = b - 0.2; }
  $("loop-text").textContent = `${a.toFixed(2)} s - ${b.toFixed(2)} s`;
  p.setLoop(a, b);
}

async function submitTrial() {
  const t = state.trial;
  $("submit").disabled = true;
  const plays = Object.fromEntries(t.keys.map((k) => [k, state.plays[k]]));
  try {
    await api("POST", "/api/submit", { listener_id: state.listener, trial_id: t.trial_id,
                                       ratings: state.ratings, plays, started_at: state.started });
  } catch (e) { $("trial-error").textContent = e.message; $("submit").disabled = false; return; }
  state.session.done.push(t.trial_id);
  await nextTrial();
}

function animate() {
  const p = state.player;
  const pos = p && p.position();
  if (pos !== null && pos !== undefined && p.duration) $("position-bar").style.left = `${(100 * pos) / p.duration}%`;
  requestAnimationFrame(animate);
}

window.addEventListener("DOMContentLoaded", () => {
  $("listener").value = new URLSearchParams(location.search).get("listener")
    || localStorage.getItem("stemdae-listener") || "";
  $("start").onclick = startSession;
  $("stop").onclick = () => state.player && state.player.stop();
  $("loop-start").oninput = updateLoop;
  $("loop-end").oninput = updateLoop;
  $("submit").onclick = submitTrial;
  requestAnimationFrame(animate);
});
