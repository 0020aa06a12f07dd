// AudioWorklet processor: microphone float32 at the context rate -> PCM16 chunks at the session rate.
//
// Posts {pcm: ArrayBuffer (Int16, little-endian), rms: number, peak: number} every `chunkMs`.
// Resampling is a windowed-sinc low-pass (only when downsampling) followed by linear interpolation:
// cheap enough for the audio thread and clean enough for speech recognition.

const TAPS = 31;

function lowPassKernel(cutoff) {
  // cutoff is a fraction of the source Nyquist (0..1).
  const kernel = new Float32Array(TAPS);
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const x = i - mid;
    const sinc = x === 0 ? cutoff : Math.sin(Math.PI * cutoff * x) / (Math.PI * x);
    const blackman =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (TAPS - 1));
    kernel[i] = sinc * blackman;
    sum += kernel[i];
  }
  for (let i = 0; i < TAPS; i++) kernel[i] /= sum;
  return kernel;
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 24000;
    this.step = sampleRate / this.targetRate; // source samples per output sample
    this.chunkSamples = Math.max(1, Math.round((this.targetRate * (opts.chunkMs || 50)) / 1000));
    this.kernel = this.step > 1 ? lowPassKernel((0.9 * this.targetRate) / sampleRate) : null;
    this.history = new Float32Array(TAPS); // ring of the last TAPS source samples for the FIR
    this.historyPos = 0;
    this.prev = 0; // last filtered source sample (for interpolation across blocks)
    this.phase = 0; // position of the next output sample, in source samples after `prev`
    this.out = new Int16Array(this.chunkSamples);
    this.outLen = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.active = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.active = false;
    };
  }

  filter(sample) {
    if (this.kernel === null) return sample;
    this.history[this.historyPos] = sample;
    this.historyPos = (this.historyPos + 1) % TAPS;
    let acc = 0;
    let pos = this.historyPos;
    for (let i = 0; i < TAPS; i++) {
      acc += this.kernel[i] * this.history[pos];
      pos = pos + 1 === TAPS ? 0 : pos + 1;
    }
    return acc;
  }

  emit(value) {
    const clamped = value > 1 ? 1 : value < -1 ? -1 : value;
    this.out[this.outLen++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.sumSquares += clamped * clamped;
    const magnitude = Math.abs(clamped);
    if (magnitude > this.peak) this.peak = magnitude;
    if (this.outLen === this.chunkSamples) {
      const pcm = this.out.buffer;
      this.port.postMessage({ pcm, rms: Math.sqrt(this.sumSquares / this.outLen), peak: this.peak }, [pcm]);
      this.out = new Int16Array(this.chunkSamples);
      this.outLen = 0;
      this.sumSquares = 0;
      this.peak = 0;
    }
  }

  process(inputs) {
    if (!this.active) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let mono = 0;
      for (let c = 0; c < channels; c++) mono += input[c][i];
      const current = this.filter(mono / channels);
      // Output samples falling between `prev` (t=0) and `current` (t=1).
      while (this.phase <= 1) {
        this.emit(this.prev + (current - this.prev) * this.phase);
        this.phase += this.step;
      }
      this.phase -= 1;
      this.prev = current;
    }
    return true;
  }
}

registerProcessor("rtserve-pcm-capture", PcmCaptureProcessor);
