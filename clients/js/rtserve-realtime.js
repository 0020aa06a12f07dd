// rtserve realtime client: microphone -> /v1/realtime (OpenAI GA dialect) -> events.
//
// No build step, no dependencies: import it straight from a <script type="module">.
//
//   import { RealtimeClient } from "/static/js/rtserve-realtime.js";
//   const client = new RealtimeClient({ session: RealtimeClient.transcriptionSession({ model: "whisper-tiny.en" }) });
//   client.on("conversation.item.input_audio_transcription.delta", (e) => console.log(e.delta));
//   client.on("conversation.item.input_audio_transcription.completed", (e) => console.log(e.transcript));
//   await client.start();
//
// Events (listen with `client.on(name, fn)` -> unsubscribe function, or addEventListener; the
// payload is `event.detail`, and `on` passes it directly):
//   every server event by its `type` (e.g. "response.output_text.delta", "input_audio_buffer.speech_started")
//   "*"          every server event
//   "state"      {state, previous, attempt?, delayMs?}   connection state changes (see STATES)
//   "level"      {rms, peak}                             microphone level, once per audio chunk
//   "error"      {message, type, code, param, source, event?}  server error events (raw one in `event`;
//                                                        not also emitted as "error" by type), failed
//                                                        transcriptions and client-side failures
//   "latency"    {kind, ms, itemId}                      "transcription": speech_stopped -> completed,
//                                                        "first_token": speech_stopped/commit -> first reply delta,
//                                                        "first_audio": ... -> first reply audio delta
//
// Spoken replies: conversationSession({ audio: true }) and the `Playback` helper (rtserve-playback.js).

const STATES = Object.freeze(["idle", "connecting", "open", "reconnecting", "closed"]);
const DEFAULT_RATE = 24000;
const MIN_CHUNK_MS = 20;
const MAX_CHUNK_MS = 200;
// Bounded: a tab in the background or a stalled socket must not grow memory without limit.
const MAX_BUFFERED_BYTES = 2 * 1024 * 1024;
// Closes that would happen again on a retry: protocol error, bad data, policy (auth), message too big.
const FINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009]);

export const VERSION = "0.1.0";

function base64FromBytes(bytes) {
  let binary = "";
  const step = 0x8000; // String.fromCharCode argument limit safety
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

function defaultUrl() {
  if (typeof location === "undefined") return "ws://127.0.0.1:8000/v1/realtime";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime`;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// Deep merge for session updates: objects merge, everything else (arrays, null) replaces.
function mergeSession(base, patch) {
  const merged = { ...base };
  for (const [key, value] of Object.entries(patch)) {
    merged[key] = isObject(value) && isObject(base[key]) ? mergeSession(base[key], value) : value;
  }
  return merged;
}

function errorDetail(source, error) {
  const err = isObject(error) ? error : { message: String(error) };
  return {
    message: err.message || String(error),
    type: err.type || (error instanceof Error ? error.name : "client_error"),
    code: err.code ?? null,
    param: err.param ?? null,
    event_id: err.event_id ?? null,
    source,
  };
}

export class RealtimeClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url]         WebSocket URL, default ws(s)://<page host>/v1/realtime
   * @param {string} [options.apiKey]      sent as the "openai-insecure-api-key.<key>" subprotocol
   * @param {string} [options.model]       added as ?model= to the URL when set
   * @param {object} [options.session]     the `session` object of session.update (see the builders below)
   * @param {number} [options.chunkMs=50]  audio per input_audio_buffer.append event (20..200 ms)
   * @param {boolean} [options.reconnect=true]
   * @param {number} [options.maxReconnectAttempts=8]
   * @param {number} [options.reconnectBaseMs=500]
   * @param {number} [options.reconnectMaxMs=8000]
   * @param {string|URL} [options.workletUrl]  where pcm-worklet.js lives (default: next to this file)
   * @param {MediaTrackConstraints} [options.audioConstraints]
   */
  constructor(options = {}) {
    super();
    this.url = options.url || defaultUrl();
    this.apiKey = options.apiKey || "";
    this.model = options.model || "";
    this.session = options.session || RealtimeClient.transcriptionSession();
    this.chunkMs = Math.min(MAX_CHUNK_MS, Math.max(MIN_CHUNK_MS, options.chunkMs || 50));
    this.reconnect = options.reconnect !== false;
    this.maxReconnectAttempts = options.maxReconnectAttempts ?? 8;
    this.reconnectBaseMs = options.reconnectBaseMs ?? 500;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 8000;
    this.workletUrl = options.workletUrl || new URL("./pcm-worklet.js", import.meta.url);
    this.audioConstraints = options.audioConstraints || {
      channelCount: 1,
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
    };

    this.state = "idle";
    this.serverSession = null; // the effective config from session.created / session.updated
    this.ws = null;
    this.wantOpen = false; // true between start()/connect() and stop(): drives reconnects
    this.attempt = 0;
    this.reconnectTimer = null;
    this.eventCounter = 0;
    this.audio = null; // {context, stream, source, node, sink}
    this.pendingConnect = null; // rejects the connect() in flight when stop() interrupts it
    this.sentMs = 0; // audio sent this client's lifetime
    this.droppedMs = 0; // audio dropped while the socket was not open (or too backed up)
    this.turnTimes = new Map(); // item_id -> speech_stopped time (performance.now())
    this.pendingReplyStart = null; // when the user turn that should trigger a reply ended
    this.firstDeltaSeen = new Set();
    this.pendingAudioStart = null; // like pendingReplyStart, for the first reply audio
    this.firstAudioSeen = new Set();
  }

  // ---- session builders -------------------------------------------------------------------

  /** A `session` for live captions: transcription only. */
  static transcriptionSession({ model, language, rate = DEFAULT_RATE, vad = {}, prompt } = {}) {
    const transcription = {};
    if (model) transcription.model = model;
    if (language) transcription.language = language;
    if (prompt) transcription.prompt = prompt;
    return {
      type: "transcription",
      audio: {
        input: {
          format: { type: "audio/pcm", rate },
          transcription,
          turn_detection: RealtimeClient.serverVad(vad),
        },
      },
    };
  }

  /**
   * A `session` for voice chat: the user's turns are transcribed and answered with streamed text, or
   * with `audio: true` spoken (PCM16 at 24 kHz, with its transcript; play it with rtserve-playback.js).
   */
  static conversationSession({
    model,
    transcriptionModel,
    language,
    instructions,
    maxOutputTokens,
    rate = DEFAULT_RATE,
    vad = {},
    audio = false,
    voice,
    speed,
  } = {}) {
    const transcription = {};
    if (transcriptionModel) transcription.model = transcriptionModel;
    if (language) transcription.language = language;
    const output = { format: { type: "audio/pcm", rate: 24000 } };
    if (voice) output.voice = voice;
    if (speed) output.speed = speed;
    const session = {
      type: "realtime",
      output_modalities: [audio ? "audio" : "text"],
      audio: {
        input: {
          format: { type: "audio/pcm", rate },
          transcription,
          turn_detection: RealtimeClient.serverVad(vad),
        },
        output,
      },
    };
    if (model) session.model = model;
    if (instructions) session.instructions = instructions;
    if (maxOutputTokens) session.max_output_tokens = maxOutputTokens;
    return session;
  }

  /** server_vad turn detection; pass `null` to the session's turn_detection to commit manually. */
  static serverVad({ threshold = 0.5, silenceDurationMs = 500, prefixPaddingMs = 300, ...rest } = {}) {
    return {
      type: "server_vad",
      threshold,
      silence_duration_ms: silenceDurationMs,
      prefix_padding_ms: prefixPaddingMs,
      ...rest,
    };
  }

  // ---- events --------------------------------------------------------------------------------

  /** Subscribe to an event; `fn` gets the payload. Returns an unsubscribe function. */
  on(name, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  setState(state, extra = {}) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit("state", { state, previous, ...extra });
  }

  fail(source, error) {
    this.emit("error", errorDetail(source, error));
  }

  // ---- properties ----------------------------------------------------------------------------

  /** The PCM rate the server expects, from the session config. */
  get sampleRate() {
    const format = this.session?.audio?.input?.format;
    return (format && format.rate) || DEFAULT_RATE;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  get micActive() {
    return this.audio !== null;
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /** Open the socket (if needed) and the microphone. Resolves once audio is flowing. */
  async start() {
    await this.connect();
    if (!this.wantOpen) return; // stop() was called while connecting
    try {
      await this.startMicrophone();
    } catch (error) {
      this.fail("microphone", error);
      this.stop();
      throw error;
    }
  }

  /** Open the socket and send the session config. Resolves when the socket is open. */
  connect() {
    this.wantOpen = true;
    this.attempt = 0;
    if (this.isOpen) return Promise.resolve();
    return this.openSocket();
  }

  /** Stop the microphone and close the socket; no reconnect. */
  stop() {
    this.wantOpen = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopMicrophone();
    if (this.pendingConnect !== null) {
      this.pendingConnect(new Error("stopped before the connection opened"));
      this.pendingConnect = null;
    }
    if (this.ws !== null) {
      const ws = this.ws;
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)
        ws.close(1000, "client stop");
    }
    this.turnTimes.clear();
    this.firstDeltaSeen.clear();
    this.pendingReplyStart = null;
    if (this.state !== "idle") this.setState("closed");
  }

  openSocket() {
    return new Promise((resolve, reject) => {
      let url;
      try {
        url = new URL(this.url, typeof location === "undefined" ? undefined : location.href);
      } catch (error) {
        this.fail("connection", error);
        this.setState("closed");
        reject(error);
        return;
      }
      if (url.protocol === "http:") url.protocol = "ws:";
      if (url.protocol === "https:") url.protocol = "wss:";
      if (this.model && !url.searchParams.has("model")) url.searchParams.set("model", this.model);
      if (!url.searchParams.has("intent") && !url.searchParams.has("model")) {
        // Tells the server the session kind up front (it would otherwise infer it from session.update).
        url.searchParams.set("intent", this.session.type === "realtime" ? "conversation" : "transcription");
      }
      const protocols = ["realtime"];
      if (this.apiKey) protocols.push(`openai-insecure-api-key.${this.apiKey}`);

      this.setState(this.attempt > 0 ? "reconnecting" : "connecting", { attempt: this.attempt });
      let ws;
      try {
        ws = new WebSocket(url.toString(), protocols);
      } catch (error) {
        this.fail("connection", error);
        this.setState("closed");
        reject(error);
        return;
      }
      this.ws = ws;
      let settled = false;
      this.pendingConnect = (error) => {
        settled = true;
        reject(error);
      };

      ws.onopen = () => {
        this.pendingConnect = null;
        this.attempt = 0;
        this.setState("open");
        // Every (re)connect starts a fresh server session: send the whole config again.
        this.send({ type: "session.update", session: this.session });
        settled = true;
        resolve();
      };
      ws.onmessage = (message) => this.handleMessage(message.data);
      ws.onerror = () => {
        // The browser hides the reason; onclose carries the code. Nothing to do here.
      };
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.pendingConnect = null;
        const reason = event.reason || (event.code === 1006 ? "connection lost" : `code ${event.code}`);
        if (!this.wantOpen) {
          this.setState("closed");
          return;
        }
        const error = {
          message: `socket closed: ${reason}`,
          type: "connection_closed",
          code: String(event.code),
        };
        if (!settled && event.code === 1006) {
          // The browser hides why a handshake failed (HTTP status, refused connection...).
          error.message =
            `could not open ${url.origin}${url.pathname}: the server is unreachable or refused the ` +
            "connection (e.g. a missing or wrong API key)";
        }
        if (!settled) {
          settled = true;
          // Fail the initial connect promptly (e.g. bad API key); reconnects keep trying below.
          if (this.attempt === 0) {
            this.wantOpen = false;
            this.stopMicrophone();
            this.fail("connection", error); // before "closed": listeners may unsubscribe on it
            this.setState("closed");
            reject(new Error(error.message));
            return;
          }
        }
        this.fail("connection", error);
        if (FINAL_CLOSE_CODES.has(event.code)) {
          this.wantOpen = false;
          this.stopMicrophone();
          this.setState("closed");
          return;
        }
        this.scheduleReconnect();
      };
    });
  }

  scheduleReconnect() {
    if (!this.reconnect || this.attempt >= this.maxReconnectAttempts) {
      this.wantOpen = false;
      this.stopMicrophone();
      this.fail("connection", {
        message: `gave up reconnecting after ${this.attempt} attempts`,
        type: "connection_closed",
      });
      this.setState("closed");
      return;
    }
    this.attempt += 1;
    const backoff = Math.min(this.reconnectMaxMs, this.reconnectBaseMs * 2 ** (this.attempt - 1));
    const delayMs = Math.round(backoff * (0.75 + Math.random() * 0.5)); // jitter: no thundering herd
    this.setState("reconnecting", { attempt: this.attempt, delayMs });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.wantOpen) return;
      this.openSocket().catch(() => {}); // failures surface as "error" events and retry
    }, delayMs);
  }

  // ---- microphone ----------------------------------------------------------------------------

  async startMicrophone() {
    if (this.audio !== null) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("microphone capture needs a secure context (https:// or http://localhost)");
    }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: this.audioConstraints });
    // The context runs at the hardware rate; the worklet resamples to the session rate
    // (Firefox cannot connect a mic stream to a context at a different rate).
    const context = new AudioContext({ latencyHint: "interactive" });
    try {
      await context.audioWorklet.addModule(this.workletUrl);
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "rtserve-pcm-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        channelCount: 1,
        channelCountMode: "explicit",
        processorOptions: { targetRate: this.sampleRate, chunkMs: this.chunkMs },
      });
      node.port.onmessage = (event) => this.handleChunk(event.data);
      // A muted sink keeps the graph pulling audio without echoing the mic to the speakers.
      const sink = context.createGain();
      sink.gain.value = 0;
      source.connect(node);
      node.connect(sink);
      sink.connect(context.destination);
      if (context.state === "suspended") await context.resume();
      this.audio = { context, stream, source, node, sink };
      if (!this.wantOpen) this.stopMicrophone(); // stop() ran while we were awaiting permissions
    } catch (error) {
      stream.getTracks().forEach((track) => track.stop());
      context.close().catch(() => {});
      throw error;
    }
  }

  stopMicrophone() {
    if (this.audio === null) return;
    const { context, stream, source, node, sink } = this.audio;
    this.audio = null;
    node.port.onmessage = null;
    node.port.postMessage("stop");
    source.disconnect();
    node.disconnect();
    sink.disconnect();
    stream.getTracks().forEach((track) => track.stop());
    context.close().catch(() => {});
    this.emit("level", { rms: 0, peak: 0 });
  }

  handleChunk({ pcm, rms, peak }) {
    this.emit("level", { rms, peak });
    this.appendAudio(new Uint8Array(pcm));
  }

  /** Send PCM16 little-endian mono audio at the session rate (Int16Array, ArrayBuffer or bytes). */
  appendAudio(pcm) {
    const bytes =
      pcm instanceof Uint8Array
        ? pcm
        : pcm instanceof ArrayBuffer
          ? new Uint8Array(pcm)
          : new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    if (!this.isOpen || this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.droppedMs += (bytes.length / 2 / this.sampleRate) * 1000;
      return false;
    }
    const sent = this.send({ type: "input_audio_buffer.append", audio: base64FromBytes(bytes) });
    if (sent) this.sentMs += (bytes.length / 2 / this.sampleRate) * 1000;
    return sent;
  }

  // ---- client events -------------------------------------------------------------------------

  /** Send a raw client event; adds an event_id. Returns false (and emits "error") when not open. */
  send(event) {
    if (!this.isOpen) {
      this.fail("client", { message: `not connected: cannot send ${event.type}`, type: "not_connected" });
      return false;
    }
    const payload = { event_id: `evt_client_${++this.eventCounter}`, ...event };
    this.ws.send(JSON.stringify(payload));
    return true;
  }

  /** Merge `patch` into the session config and send it (it is re-sent on every reconnect). */
  updateSession(patch) {
    const rateBefore = this.sampleRate;
    this.session = mergeSession(this.session, patch);
    if (this.sampleRate !== rateBefore && this.audio !== null) {
      // The worklet was built for the old rate: rebuild the capture graph.
      this.stopMicrophone();
      this.startMicrophone().catch((error) => this.fail("microphone", error));
    }
    return this.isOpen ? this.send({ type: "session.update", session: this.session }) : true;
  }

  /** End the user turn by hand (needed when turn_detection is null). */
  commit() {
    this.pendingReplyStart = performance.now();
    return this.send({ type: "input_audio_buffer.commit" });
  }

  /** Drop audio the server has buffered but not committed. */
  clear() {
    return this.send({ type: "input_audio_buffer.clear" });
  }

  /** Add a typed user message and ask for a reply. */
  sendText(text) {
    const ok = this.send({
      type: "conversation.item.create",
      item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
    });
    if (!ok) return false;
    this.pendingReplyStart = this.pendingAudioStart = performance.now();
    return this.send({ type: "response.create" });
  }

  /** Stop the reply being generated. */
  cancelResponse() {
    return this.send({ type: "response.cancel" });
  }

  /** Cut an assistant item's audio (and the transcript the model remembers) to what was played. */
  truncate(itemId, audioEndMs, contentIndex = 0) {
    return this.send({
      type: "conversation.item.truncate",
      item_id: itemId,
      content_index: contentIndex,
      audio_end_ms: Math.max(0, Math.floor(audioEndMs)),
    });
  }

  // ---- server events -------------------------------------------------------------------------

  handleMessage(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch (error) {
      this.fail("protocol", {
        message: `server sent invalid JSON: ${error.message}`,
        type: "protocol_error",
      });
      return;
    }
    if (!isObject(event) || typeof event.type !== "string") {
      this.fail("protocol", { message: "server event without a type", type: "protocol_error" });
      return;
    }
    this.trackLatency(event);
    if (event.type === "session.created" || event.type === "session.updated")
      this.serverSession = event.session;
    if (event.type === "error") {
      // Not re-emitted under its own type: "error" is the normalized event (raw one in `.event`).
      this.emit("error", { ...errorDetail("server", event.error || {}), event });
    } else {
      if (event.type === "conversation.item.input_audio_transcription.failed") {
        this.emit("error", { ...errorDetail("transcription", event.error || {}), event });
      }
      this.emit(event.type, event);
    }
    this.emit("*", event);
  }

  trackLatency(event) {
    const now = performance.now();
    switch (event.type) {
      case "input_audio_buffer.speech_stopped":
        this.turnTimes.set(event.item_id, now);
        this.pendingReplyStart = now;
        this.pendingAudioStart = now;
        break;
      case "conversation.item.input_audio_transcription.completed": {
        const stoppedAt = this.turnTimes.get(event.item_id);
        if (stoppedAt !== undefined) {
          this.turnTimes.delete(event.item_id);
          this.emit("latency", { kind: "transcription", ms: now - stoppedAt, itemId: event.item_id });
        }
        break;
      }
      case "response.output_text.delta":
      case "response.output_audio_transcript.delta":
        if (this.pendingReplyStart !== null && !this.firstDeltaSeen.has(event.response_id)) {
          this.firstDeltaSeen.add(event.response_id);
          this.emit("latency", {
            kind: "first_token",
            ms: now - this.pendingReplyStart,
            itemId: event.item_id,
          });
          this.pendingReplyStart = null;
        }
        break;
      case "response.output_audio.delta":
        if (this.pendingAudioStart !== null && !this.firstAudioSeen.has(event.response_id)) {
          this.firstAudioSeen.add(event.response_id);
          this.emit("latency", { kind: "first_audio", ms: now - this.pendingAudioStart, itemId: event.item_id });
          this.pendingAudioStart = null;
        }
        break;
      case "response.done":
        if (event.response && event.response.id) {
          this.firstDeltaSeen.delete(event.response.id);
          this.firstAudioSeen.delete(event.response.id);
        }
        break;
      default:
        break;
    }
  }
}

RealtimeClient.STATES = STATES;

export default RealtimeClient;
