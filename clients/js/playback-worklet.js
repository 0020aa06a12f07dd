// AudioWorklet processor: plays queued float32 reply audio (at the context's rate) as it arrives.
//
// Messages in:  {type: "push", samples: Float32Array}   append to the queue
//               {type: "clear"}                          drop everything queued (barge-in)
// Messages out: {type: "played", played, queued}         samples played so far (every ~50 ms while playing,
//                                                        and once when the queue runs dry)
//               {type: "cleared", played}                the answer to "clear"
// Only samples actually rendered count as played: an underrun (the server is behind) plays silence
// and counts nothing, so `played` is what the listener heard.

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // Float32Array chunks
    this.offset = 0; // read position in queue[0]
    this.queued = 0; // samples waiting
    this.played = 0;
    this.sinceReport = 0;
    this.reportEvery = Math.round(sampleRate / 20);
    this.wasPlaying = false;
    this.port.onmessage = (event) => {
      const message = event.data;
      if (message.type === "push") {
        this.queue.push(message.samples);
        this.queued += message.samples.length;
      } else if (message.type === "clear") {
        this.queue = [];
        this.offset = 0;
        this.queued = 0;
        this.port.postMessage({ type: "cleared", played: this.played });
      }
    };
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const channel = output[0];
    let written = 0;
    while (written < channel.length && this.queue.length > 0) {
      const chunk = this.queue[0];
      const n = Math.min(channel.length - written, chunk.length - this.offset);
      channel.set(chunk.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      if (this.offset === chunk.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    channel.fill(0, written);
    for (let c = 1; c < output.length; c++) output[c].set(channel);
    this.queued -= written;
    this.played += written;
    this.sinceReport += written;
    const playing = this.queued > 0;
    if (this.sinceReport >= this.reportEvery || (this.wasPlaying && !playing)) {
      this.sinceReport = 0;
      this.port.postMessage({ type: "played", played: this.played, queued: this.queued });
    }
    this.wasPlaying = playing;
    return true;
  }
}

registerProcessor("rtserve-playback", PlaybackProcessor);
