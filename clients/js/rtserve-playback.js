// rtserve reply playback: plays a conversation's spoken replies as they stream, and stops on barge-in.
//
//   import { RealtimeClient } from "/static/js/rtserve-realtime.js";
//   import { Playback } from "/static/js/rtserve-playback.js";
//   const playback = new Playback();
//   await playback.start();            // in a user gesture's handler (browsers' autoplay rules)
//   playback.attach(client);           // plays response.output_audio.delta; on speech_started it stops
//                                      // and sends conversation.item.truncate with the played duration
//
// The session must ask for audio replies in PCM16 at 24 kHz (output_modalities ["audio"], the
// audio/pcm output format: RealtimeClient.conversationSession({ audio: true }) does both).
//
// Events (playback.on(name, fn)): "played" {itemId, playedMs, totalPlayedSamples} while audio plays,
// "interrupted" {itemId, playedMs} when barge-in cut a reply short.

const OUTPUT_RATE = 24000;

function bytesFromBase64(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** base64 PCM16 little-endian -> Float32Array in [-1, 1). */
export function pcm16ToFloat(b64) {
  const bytes = bytesFromBase64(b64);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}

export class Playback extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string|URL} [options.workletUrl]  where playback-worklet.js lives (default: next to this file)
   */
  constructor(options = {}) {
    super();
    this.workletUrl = options.workletUrl || new URL("./playback-worklet.js", import.meta.url);
    this.context = null;
    this.node = null;
    this.enqueued = 0; // samples pushed since start()
    this.played = 0; // samples rendered since start() (from the worklet)
    this.items = new Map(); // item_id -> {start, end}: its samples' range in the pushed sequence
    this.currentItem = null; // the item whose audio was pushed last
    this.unsubscribers = [];
  }

  on(name, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(name, listener);
    return () => this.removeEventListener(name, listener);
  }

  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  async start() {
    if (this.context) return;
    this.context = new AudioContext({ sampleRate: OUTPUT_RATE, latencyHint: "interactive" });
    await this.context.audioWorklet.addModule(this.workletUrl);
    this.node = new AudioWorkletNode(this.context, "rtserve-playback", { outputChannelCount: [1] });
    this.node.port.onmessage = (event) => this.onWorkletMessage(event.data);
    this.node.connect(this.context.destination);
    if (this.context.state === "suspended") await this.context.resume();
  }

  /** Queue one audio delta (base64 PCM16 at 24 kHz) of the assistant item `itemId`. */
  enqueue(itemId, b64) {
    if (!this.node) return;
    const samples = pcm16ToFloat(b64);
    if (samples.length === 0) return;
    let range = this.items.get(itemId);
    if (!range) {
      range = { start: this.enqueued, end: this.enqueued };
      this.items.set(itemId, range);
    }
    this.enqueued += samples.length;
    range.end = this.enqueued;
    this.currentItem = itemId;
    this.node.port.postMessage({ type: "push", samples }, [samples.buffer]);
  }

  /** Milliseconds of `itemId`'s audio played so far. */
  playedMs(itemId, played = this.played) {
    const range = this.items.get(itemId);
    if (!range) return 0;
    const heard = Math.min(Math.max(played - range.start, 0), range.end - range.start);
    return Math.floor((heard * 1000) / OUTPUT_RATE);
  }

  /** Whether reply audio is still queued (the listener is hearing the assistant). */
  get playing() {
    return this.enqueued > this.played;
  }

  /** Stop at once and drop what is queued. Resolves to {itemId, playedMs} of the item cut short. */
  async interrupt() {
    if (!this.node) return null;
    const itemId = this.currentItem;
    const played = await new Promise((resolve) => {
      this.pendingClear = resolve;
      this.node.port.postMessage({ type: "clear" });
    });
    this.played = played;
    this.enqueued = played; // nothing is queued any more
    if (itemId === null) return null;
    const range = this.items.get(itemId);
    const playedMs = this.playedMs(itemId, played);
    if (range) range.end = Math.min(range.end, played);
    return { itemId, playedMs };
  }

  onWorkletMessage(message) {
    if (message.type === "cleared" && this.pendingClear) {
      const resolve = this.pendingClear;
      this.pendingClear = null;
      resolve(message.played);
      return;
    }
    if (message.type === "played") {
      this.played = message.played;
      const itemId = this.currentItem;
      this.emit("played", {
        itemId,
        playedMs: itemId ? this.playedMs(itemId) : 0,
        totalPlayedSamples: this.played,
      });
    }
  }

  /**
   * Play `client`'s spoken replies; on barge-in (speech_started while a reply plays) stop and tell the
   * server what was heard with conversation.item.truncate. Returns a detach function.
   */
  attach(client) {
    const offs = [
      client.on("response.output_audio.delta", (event) => this.enqueue(event.item_id, event.delta)),
      client.on("input_audio_buffer.speech_started", () => this.bargeIn(client)),
    ];
    this.unsubscribers.push(...offs);
    return () => offs.forEach((off) => off());
  }

  async bargeIn(client) {
    if (!this.playing) return;
    const cut = await this.interrupt();
    if (!cut) return;
    client.send({
      type: "conversation.item.truncate",
      item_id: cut.itemId,
      content_index: 0,
      audio_end_ms: cut.playedMs,
    });
    this.emit("interrupted", cut);
  }

  async stop() {
    this.unsubscribers.forEach((off) => off());
    this.unsubscribers = [];
    const context = this.context;
    this.context = null;
    this.node = null;
    if (context) await context.close();
  }
}

export default Playback;
