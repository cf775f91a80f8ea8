// xpnet demo: draw on #pad, POST the canvas as a PNG data URL to /api/predict (throttled to one
// request per THROTTLE_MS while drawing, and at once when a stroke ends), show the probabilities,
// the 28x28 input and the hidden layer.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const statusLine = document.getElementById("status");
const prediction = document.getElementById("prediction");
const bars = document.getElementById("bars");
const seen = document.getElementById("seen");
const hiddenBox = document.getElementById("hidden");
const PEN = 22;            // px on the 280 px pad: after scaling into MNIST's 20 px box, about 2 px
const THROTTLE_MS = 150;

let classes = [];
let strokes = 0;           // strokes drawn since the last clear (the page's state the answer refers to)
let sent = 0;              // request sequence number; only the newest answer is shown
let timer = null;
let lastSent = -Infinity;  // performance.now() of the last request
let drawing = false;
let last = null;

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

function blankPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function buildBars() {
  bars.textContent = "";
  classes.forEach((name, i) => {
    const li = document.createElement("li");
    li.dataset.index = String(i);
    li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct">–</span>';
    li.querySelector(".name").textContent = name;
    bars.appendChild(li);
  });
}

function resetOutputs() {
  prediction.textContent = "–";
  prediction.dataset.class = "";
  prediction.dataset.label = "";
  prediction.classList.remove("small");
  bars.querySelectorAll("li").forEach((li) => {
    li.classList.remove("best");
    li.querySelector(".fill").style.width = "0";
    li.querySelector(".pct").textContent = "–";
  });
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  hiddenBox.textContent = "";
}

function point(event) {
  const rect = pad.getBoundingClientRect();
  return { x: (event.clientX - rect.left) * (pad.width / rect.width), y: (event.clientY - rect.top) * (pad.height / rect.height) };
}

function line(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  line(last, last);  // a dot
  strokes += 1;
  prediction.dataset.strokes = String(strokes);
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    line(last, p);
    last = p;
  }
  schedule();
});

function endStroke(event) {
  if (!drawing) return;
  drawing = false;
  if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
  clearTimeout(timer);
  timer = null;
  send();  // the finished stroke at once
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function schedule() {  // live updates while drawing, without a request per pointer event
  if (timer !== null) return;
  timer = setTimeout(send, Math.max(0, THROTTLE_MS - (performance.now() - lastSent)));
}

async function post(body, seq) {
  prediction.dataset.busy = "true";
  try {
    const response = await fetch("api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (seq !== sent) return;  // a newer drawing is on its way
    if (!response.ok) {
      resetOutputs();
      say(answer.error || `HTTP ${response.status}`, true);
      return;
    }
    show(answer);
  } catch (err) {
    if (seq === sent) say(`The server did not answer (${err.message}). Is \`xpnet demo\` still running?`, true);
  } finally {
    if (seq === sent) prediction.dataset.busy = "false";
  }
}

function send() {
  timer = null;
  if (strokes === 0) return;
  lastSent = performance.now();
  sent += 1;
  post({ image: pad.toDataURL("image/png") }, sent);
}

function show(answer) {
  const p = answer.probabilities;
  const best = answer.predicted;
  prediction.textContent = answer.label;
  prediction.classList.toggle("small", answer.label.length > 3);
  prediction.dataset.class = String(best);
  prediction.dataset.label = answer.label;
  bars.querySelectorAll("li").forEach((li, i) => {
    li.classList.toggle("best", i === best);
    li.querySelector(".fill").style.width = `${(p[i] * 100).toFixed(1)}%`;
    li.querySelector(".pct").textContent = `${(p[i] * 100).toFixed(1)}%`;
  });
  drawInput(answer.input);
  drawHidden(answer.hidden);
  say(`${answer.label}: ${(p[best] * 100).toFixed(1)} % sure.`, false);
}

function drawInput(rows) {
  const c = seen.getContext("2d");
  const img = c.createImageData(28, 28);
  rows.forEach((row, y) => row.forEach((v, x) => {
    const k = 4 * (y * 28 + x);
    const g = Math.round(Math.max(0, Math.min(1, v)) * 255);
    img.data[k] = img.data[k + 1] = img.data[k + 2] = g;
    img.data[k + 3] = 255;
  }));
  c.putImageData(img, 0, 0);
}

// One strip per hidden layer: cells in rows of up to 64, colour = activation / the layer's max.
function drawHidden(layers) {
  hiddenBox.textContent = "";
  layers.forEach((values) => {
    const n = values.length;
    const cols = Math.min(n, n <= 16 ? n : Math.ceil(Math.sqrt(n * 4)));
    const rows = Math.ceil(n / cols);
    const cell = Math.max(4, Math.min(24, Math.floor(268 / cols)));
    const canvas = document.createElement("canvas");
    canvas.width = cols * cell;
    canvas.height = rows * cell;
    canvas.title = `${n} hidden neurons`;
    const c = canvas.getContext("2d");
    const top = Math.max(...values.map(Math.abs), 1e-9);
    values.forEach((v, i) => {
      const t = Math.max(0, Math.min(1, Math.abs(v) / top));
      // black → deep blue → yellow-white: easy to read at a glance, also for colour-blind viewers
      const r = Math.round(255 * Math.max(0, (t - 0.45) / 0.55));
      const g = Math.round(255 * Math.pow(t, 1.3));
      const b = Math.round(255 * Math.min(1, t * 2.2) * (1 - 0.6 * t));
      c.fillStyle = `rgb(${r},${g},${b})`;
      c.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - (cell > 6 ? 1 : 0), cell - (cell > 6 ? 1 : 0));
    });
    hiddenBox.appendChild(canvas);
  });
}

document.getElementById("clear").addEventListener("click", () => {
  clearTimeout(timer);
  timer = null;
  blankPad();
  strokes = 0;
  sent += 1;  // drop answers still on their way
  prediction.dataset.strokes = "0";
  prediction.dataset.busy = "false";
  resetOutputs();
  say("Draw a digit with the mouse or a finger.", false);
});

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const image = new Image();
    image.onload = () => {  // show the upload on the pad, fitted
      blankPad();
      const s = Math.min(pad.width / image.width, pad.height / image.height);
      ctx.drawImage(image, (pad.width - image.width * s) / 2, (pad.height - image.height * s) / 2, image.width * s, image.height * s);
    };
    image.src = reader.result;
    strokes += 1;
    prediction.dataset.strokes = String(strokes);
    sent += 1;
    post({ image: reader.result }, sent);  // the file itself, not the pad's copy
  };
  reader.onerror = () => say(`Cannot read ${file.name}.`, true);
  reader.readAsDataURL(file);
  event.target.value = "";
});

async function start() {
  blankPad();
  try {
    const info = await (await fetch("api/model")).json();
    classes = info.classes;
    buildBars();
    const sizes = info.sizes.join("-");
    const data = info.dataset ? ` trained on ${info.dataset}` : "";
    document.getElementById("model-info").textContent = `${info.model}: ${sizes} (${info.activation})${data}`;
    const hidden = info.sizes.slice(1, -1);
    document.getElementById("hidden-title").textContent =
      hidden.length === 1 ? `Hidden layer (${hidden[0]} neurons)` : `Hidden layers (${hidden.join(", ")} neurons)`;
    if (!info.draw) {
      document.getElementById("draw-title").textContent = "Upload an image (or draw)";
      document.querySelector("h1 span").textContent = "· upload a picture";
      document.title = "xpnet · upload a picture";
      say(`This model was trained on ${info.dataset}: upload a picture of one of its classes.`, false);
    }
    document.body.dataset.ready = "true";
  } catch (err) {
    say(`Cannot reach the server (${err.message}).`, true);
  }
}

start();
