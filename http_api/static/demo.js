// rtserve demo page: live captions and voice chat on top of the RealtimeClient.
import { RealtimeClient } from "/static/js/rtserve-realtime.js";
import { Playback } from "/static/js/rtserve-playback.js";

const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  statusText: $("status-text"),
  modeInputs: document.querySelectorAll('input[name="mode"]'),
  modeHint: $("mode-hint"),
  asrModel: $("asr-model"),
  llmField: $("llm-field"),
  llmModel: $("llm-model"),
  language: $("language"),
  vadThreshold: $("vad-threshold"),
  vadThresholdValue: $("vad-threshold-value"),
  silenceMs: $("silence-ms"),
  silenceMsValue: $("silence-ms-value"),
  instructionsField: $("instructions-field"),
  instructions: $("instructions"),
  maxTokensField: $("max-tokens-field"),
  maxTokens: $("max-tokens"),
  sampleRate: $("sample-rate"),
  apiKey: $("api-key"),
  advanced: document.querySelector(".advanced"),
  start: $("start"),
  startLabel: $("start-label"),
  commit: $("commit"),
  cancel: $("cancel"),
  clear: $("clear"),
  level: $("level"),
  levelFill: $("level-fill"),
  error: $("error"),
  errorText: $("error-text"),
  errorDismiss: $("error-dismiss"),
  transcript: $("transcript"),
  empty: $("empty"),
  textForm: $("text-form"),
  textInput: $("text-input"),
  textSend: $("text-send"),
  metricModel: $("metric-model"),
  metricAudio: $("metric-audio"),
  metricLatency: $("metric-latency"),
  metricFirstTokenWrap: $("metric-first-token-wrap"),
  metricFirstToken: $("metric-first-token"),
  spokenField: $("spoken-field"),
  spokenReplies: $("spoken-replies"),
  metricReplyAudioWrap: $("metric-reply-audio-wrap"),
  metricReplyAudio: $("metric-reply-audio"),
};

const MODE_HINTS = {
  captions: "Transcribes what you say, turn by turn.",
  chat: "Talk to the model: your turns are transcribed, its reply streams back as text (and speech).",
};
const ERROR_LABELS = {
  server: "Server error",
  transcription: "Transcription failed",
  connection: "Connection problem",
  microphone: "Microphone problem",
  protocol: "Protocol error",
  client: "Error",
};
const STATE_LABELS = {
  idle: "Disconnected",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

let client = null;
let playback = null; // plays spoken replies (voice chat with "Speak replies aloud")
let audioLabel = "";
let lastAudioRender = 0;
let lastFirstAudio = ""; // speech end -> first reply audio, as shown
let unsubscribers = [];
const turns = new Map(); // item_id -> turn element (user turns)
const replies = new Map(); // response_id -> turn element (assistant turns)
const latencies = { transcription: [], first_token: [], first_audio: [] };

// ---- settings ----------------------------------------------------------------------------------

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function vadSettings() {
  return { threshold: Number(ui.vadThreshold.value), silenceDurationMs: Number(ui.silenceMs.value) };
}

function buildSession() {
  const common = {
    language: ui.language.value || undefined,
    rate: Number(ui.sampleRate.value),
    vad: vadSettings(),
  };
  if (mode() === "chat") {
    return RealtimeClient.conversationSession({
      ...common,
      model: ui.llmModel.value || undefined,
      transcriptionModel: ui.asrModel.value || undefined,
      instructions: ui.instructions.value.trim() || undefined,
      maxOutputTokens: Number.parseInt(ui.maxTokens.value, 10) || undefined,
      audio: spoken(),
    });
  }
  return RealtimeClient.transcriptionSession({ ...common, model: ui.asrModel.value || undefined });
}

function spoken() {
  return mode() === "chat" && ui.spokenReplies.checked;
}

function renderPlayed({ totalPlayedSamples }) {
  ui.metricReplyAudio.dataset.playedSamples = String(totalPlayedSamples);
  const seconds = (totalPlayedSamples / 24000).toFixed(1);
  ui.metricReplyAudio.textContent = `${seconds} s played` + (lastFirstAudio ? ` · first after ${lastFirstAudio}` : "");
}

function renderSettingLabels() {
  ui.vadThresholdValue.value = Number(ui.vadThreshold.value).toFixed(2);
  ui.silenceMsValue.value = `${ui.silenceMs.value} ms`;
}

function renderMode() {
  const chat = mode() === "chat";
  ui.llmField.hidden = !chat;
  ui.instructionsField.hidden = !chat;
  ui.maxTokensField.hidden = !chat;
  ui.spokenField.hidden = !chat;
  ui.metricReplyAudioWrap.hidden = !spoken();
  ui.textForm.hidden = !chat;
  ui.cancel.hidden = !chat;
  ui.metricFirstTokenWrap.hidden = !chat;
  ui.modeHint.textContent = MODE_HINTS[mode()];
  ui.transcript.dataset.mode = mode();
}

// ---- models ------------------------------------------------------------------------------------

function isAsrModel(model) {
  if (model.max_model_len) return false; // only language models have a context length
  const text = `${model.id} ${model.owned_by || ""} ${model.type || ""} ${(model.capabilities || []).join(" ")}`;
  return /whisper|asr|transcri|speech/i.test(text);
}

function fillSelect(select, ids, preferred) {
  const previous = select.value;
  select.replaceChildren(new Option("Server default", ""));
  for (const id of ids) select.append(new Option(id, id));
  const wanted = [previous, preferred].find((id) => id && ids.includes(id));
  select.value = wanted || ids[0] || "";
}

async function loadModels() {
  const headers = ui.apiKey.value ? { Authorization: `Bearer ${ui.apiKey.value}` } : {};
  try {
    const response = await fetch("/v1/models", { headers });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      ui.advanced.open = true;
      throw new Error("this server needs an API key: enter it under Advanced, then press Start.");
    }
    if (!response.ok) {
      const message = body.error?.message || `HTTP ${response.status}`;
      throw new Error(`could not list models: ${message}`);
    }
    const models = Array.isArray(body.data) ? body.data : [];
    const asr = models.filter(isAsrModel).map((m) => m.id);
    const llm = models.filter((m) => !isAsrModel(m) && !m.task).map((m) => m.id); // task: a pooling model
    // An English-only model is the fast, accurate default for English speech.
    fillSelect(
      ui.asrModel,
      asr,
      asr.find((id) => id.endsWith(".en")),
    );
    fillSelect(ui.llmModel, llm);
  } catch (error) {
    showError(error.message || String(error));
  }
}

// ---- status, errors, metrics -------------------------------------------------------------------

function setStatus(state, detail = "") {
  ui.status.dataset.state = state;
  ui.statusText.textContent = detail ? `${STATE_LABELS[state]} · ${detail}` : STATE_LABELS[state];
}

function showError(message) {
  ui.errorText.textContent = message;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.errorText.textContent = "";
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function recordLatency(kind, ms) {
  const list = latencies[kind];
  list.push(ms);
  if (list.length > 50) list.shift();
  const text = `${Math.round(ms)} ms` + (list.length > 1 ? ` (median ${Math.round(median(list))} ms)` : "");
  if (kind === "first_audio") {
    lastFirstAudio = text;
    return;
  }
  (kind === "transcription" ? ui.metricLatency : ui.metricFirstToken).textContent = text;
}

function renderSessionMetrics(session) {
  const input = session?.audio?.input || {};
  const asr = input.transcription?.model || ui.asrModel.value || "server default";
  ui.metricModel.textContent =
    mode() === "chat" ? `${session?.model || ui.llmModel.value || "default"} + ${asr}` : asr;
  const rate = input.format?.rate || Number(ui.sampleRate.value);
  audioLabel = `PCM16 · ${rate / 1000} kHz`;
  renderAudioMetric();
}

function renderAudioMetric() {
  const sentS = client ? client.sentMs / 1000 : 0;
  const droppedS = client ? client.droppedMs / 1000 : 0;
  let text = sentS > 0 ? `${audioLabel} · ${sentS.toFixed(0)} s sent` : audioLabel;
  if (droppedS >= 0.5) text += ` · ${droppedS.toFixed(1)} s dropped`;
  ui.metricAudio.textContent = text;
}

function setLevel(rms) {
  // -60 dBFS .. 0 dBFS onto 0..1: speech sits around the middle.
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const level = Math.min(1, Math.max(0, (db + 60) / 60));
  ui.levelFill.style.transform = `scaleX(${level})`;
  ui.level.setAttribute("aria-valuenow", String(Math.round(level * 100)));
  ui.level.dataset.active = String(level > 0.45);
}

// ---- transcript --------------------------------------------------------------------------------

function timeLabel() {
  return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function scrollToEnd() {
  const nearBottom = ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 120;
  if (nearBottom) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function createTurn(role) {
  ui.empty.hidden = true;
  const turn = document.createElement("article");
  turn.className = `turn ${role}`;
  turn.dataset.role = role;
  turn.dataset.state = "partial";
  const who = document.createElement("header");
  who.className = "turn-meta";
  const name = document.createElement("span");
  name.className = "turn-who";
  name.textContent = role === "user" ? "You" : "Assistant";
  const when = document.createElement("span");
  when.className = "turn-when";
  when.textContent = timeLabel();
  who.append(name, when);
  const text = document.createElement("p");
  text.className = "turn-text";
  turn.append(who, text);
  ui.transcript.append(turn);
  scrollToEnd();
  return turn;
}

function userTurn(itemId) {
  let turn = turns.get(itemId);
  if (!turn) {
    turn = createTurn("user");
    turn.dataset.itemId = itemId;
    turns.set(itemId, turn);
  }
  return turn;
}

function setNote(turn, note) {
  let el = turn.querySelector(".turn-note");
  if (!el) {
    el = document.createElement("span");
    el.className = "turn-note";
    turn.querySelector(".turn-meta").append(el);
  }
  el.textContent = note;
}

function onSpeechStarted(event) {
  const turn = userTurn(event.item_id);
  turn.dataset.listening = "true";
}

function onSpeechStopped(event) {
  const turn = userTurn(event.item_id);
  delete turn.dataset.listening;
}

function onTranscriptDelta(event) {
  if (!event.delta) return;
  const turn = userTurn(event.item_id);
  delete turn.dataset.listening;
  turn.querySelector(".turn-text").textContent += event.delta;
  scrollToEnd();
}

function onTranscriptCompleted(event) {
  const turn = userTurn(event.item_id);
  const text = (event.transcript || "").trim();
  delete turn.dataset.listening;
  if (!text) {
    // Noise that VAD took for speech: nothing to show.
    turns.delete(event.item_id);
    turn.remove();
    ui.empty.hidden = ui.transcript.querySelector(".turn") !== null;
    return;
  }
  turn.querySelector(".turn-text").textContent = text;
  turn.dataset.state = "final";
  scrollToEnd();
}

function onTranscriptFailed(event) {
  const turn = turns.get(event.item_id);
  if (!turn) return;
  turn.dataset.state = "failed";
  setNote(turn, "transcription failed");
}

function replyTurn(responseId) {
  let turn = replies.get(responseId);
  if (!turn) {
    turn = createTurn("assistant");
    turn.dataset.responseId = responseId;
    turn.dataset.listening = "true";
    replies.set(responseId, turn);
  }
  return turn;
}

function onResponseCreated(event) {
  if (event.response?.id) replyTurn(event.response.id);
  ui.cancel.disabled = false;
}

function onResponseDelta(event) {
  if (!event.delta) return;
  const turn = replyTurn(event.response_id);
  turn.dataset.itemId = event.item_id;
  delete turn.dataset.listening;
  turn.querySelector(".turn-text").textContent += event.delta;
  scrollToEnd();
}

function onResponseDone(event) {
  const response = event.response || {};
  ui.cancel.disabled = true;
  const turn = response.id ? replies.get(response.id) : null;
  if (!turn) return;
  delete turn.dataset.listening;
  turn.dataset.state = "final";
  turn.dataset.status = response.status || "completed";
  if (response.status && response.status !== "completed") {
    const reason = response.status_details?.reason;
    setNote(turn, reason ? `${response.status}: ${reason}` : response.status);
  }
  if (!turn.querySelector(".turn-text").textContent && response.status === "completed") turn.remove();
}

function clearTranscript() {
  turns.clear();
  replies.clear();
  ui.transcript.querySelectorAll(".turn").forEach((el) => el.remove());
  ui.empty.hidden = false;
}

// ---- running -----------------------------------------------------------------------------------

function setRunning(running) {
  ui.start.dataset.running = String(running);
  ui.startLabel.textContent = running ? "Stop" : "Start";
  ui.commit.disabled = !running;
  ui.textInput.disabled = !running;
  ui.textSend.disabled = !running;
  for (const input of ui.modeInputs) input.disabled = running;
  ui.sampleRate.disabled = running;
  ui.spokenReplies.disabled = running; // playback starts with the session
  ui.apiKey.disabled = running;
  if (!running) {
    ui.cancel.disabled = true;
    setLevel(0);
  }
}

function bind(name, fn) {
  unsubscribers.push(client.on(name, fn));
}

async function start() {
  hideError();
  client = new RealtimeClient({ session: buildSession(), apiKey: ui.apiKey.value.trim() || undefined });
  bind("state", ({ state, attempt, delayMs }) => {
    const detail =
      state === "reconnecting" && delayMs
        ? `attempt ${attempt}, retrying in ${(delayMs / 1000).toFixed(1)} s`
        : "";
    setStatus(state, detail);
    if (state === "closed") stopClient();
  });
  bind("error", (error) => {
    const code = error.code && error.source !== "connection" ? ` (${error.code})` : "";
    showError(`${ERROR_LABELS[error.source] || "Error"}${code}: ${error.message}`);
  });
  bind("level", ({ rms }) => {
    setLevel(rms);
    const now = performance.now();
    if (now - lastAudioRender > 500) {
      lastAudioRender = now;
      renderAudioMetric();
    }
  });
  bind("latency", ({ kind, ms }) => recordLatency(kind, ms));
  bind("session.created", (event) => renderSessionMetrics(event.session));
  bind("session.updated", (event) => renderSessionMetrics(event.session));
  bind("input_audio_buffer.speech_started", onSpeechStarted);
  bind("input_audio_buffer.speech_stopped", onSpeechStopped);
  bind("conversation.item.input_audio_transcription.delta", onTranscriptDelta);
  bind("conversation.item.input_audio_transcription.completed", onTranscriptCompleted);
  bind("conversation.item.input_audio_transcription.failed", onTranscriptFailed);
  bind("response.created", onResponseCreated);
  bind("response.output_text.delta", onResponseDelta);
  bind("response.output_audio_transcript.delta", onResponseDelta);
  bind("response.done", onResponseDone);
  if (spoken()) await startPlayback();

  setRunning(true);
  renderSessionMetrics(client.session);
  const current = client;
  try {
    await current.start();
  } catch (error) {
    if (client !== current) return; // Stop was pressed while connecting: not an error
    // The client already emitted an "error" event with the details.
    stopClient();
    if (ui.error.hidden) showError(error.message || String(error));
  }
}

async function startPlayback() {
  // Created in the Start click's handler: browsers let audio start only after a user gesture.
  playback = new Playback();
  try {
    await playback.start();
  } catch (error) {
    showError(`Audio playback is unavailable: ${error.message || error}`);
    playback = null;
    return;
  }
  playback.attach(client);
  playback.on("played", renderPlayed);
  playback.on("interrupted", ({ itemId, playedMs }) => {
    const turn = ui.transcript.querySelector(`.turn.assistant[data-item-id="${CSS.escape(itemId)}"]`);
    if (turn) setNote(turn, `interrupted after ${(playedMs / 1000).toFixed(1)} s`);
  });
}

function stopClient() {
  if (playback !== null) {
    playback.stop();
    playback = null;
  }
  if (client === null) return;
  const current = client;
  client = null;
  unsubscribers.forEach((off) => off());
  unsubscribers = [];
  current.stop();
  setRunning(false);
  setStatus("idle");
}

function onSettingsChange() {
  renderSettingLabels();
  if (client !== null) client.updateSession(buildSession());
}

// ---- wiring ------------------------------------------------------------------------------------

ui.start.addEventListener("click", () => (client === null ? start() : stopClient()));
ui.commit.addEventListener("click", () => client?.commit());
ui.cancel.addEventListener("click", () => client?.cancelResponse());
ui.clear.addEventListener("click", clearTranscript);
ui.errorDismiss.addEventListener("click", hideError);
ui.textForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.textInput.value.trim();
  if (!text || client === null) return;
  const turn = createTurn("user");
  turn.querySelector(".turn-text").textContent = text;
  turn.dataset.state = "final";
  turn.dataset.typed = "true";
  client.sendText(text);
  ui.textInput.value = "";
});
for (const input of ui.modeInputs) input.addEventListener("change", renderMode);
ui.spokenReplies.addEventListener("change", renderMode);
ui.vadThreshold.addEventListener("input", renderSettingLabels);
ui.silenceMs.addEventListener("input", renderSettingLabels);
for (const control of [
  ui.vadThreshold,
  ui.silenceMs,
  ui.asrModel,
  ui.llmModel,
  ui.language,
  ui.instructions,
  ui.maxTokens,
]) {
  control.addEventListener("change", onSettingsChange);
}
ui.apiKey.addEventListener("change", () => {
  hideError();
  loadModels();
});
window.addEventListener("pagehide", stopClient);

renderMode();
renderSettingLabels();
setStatus("idle");
loadModels();
