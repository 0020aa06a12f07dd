"""Audio constants shared by every layer (no torch here: front ends import this)."""

SAMPLE_RATE = 16000  # Hz: what Whisper, silero-vad and the engine take
