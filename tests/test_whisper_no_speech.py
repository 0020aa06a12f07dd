"""Whisper's confidence figures (avg_logprob, no_speech_prob) and its no-speech rule, on the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio.features import N_SAMPLES, log_mel_spectrogram, pad_batch
from audio.vad import has_speech
from engine.asr.decoding import NEG_INF
from engine.asr.job import WhisperJob, WhisperRowOutput
from engine.asr.model_runner import WhisperRunner
from engine.asr.text import compression_ratio, is_silent
from engine.config import default_cache_dir
from engine.models.whisper_loader import load_whisper
from tests.speech import synthesize, wer

SENTENCE = "We walked along the river to the old stone bridge before the evening rain."
SILENCE = np.zeros(20 * 16000, dtype=np.float32)
NOISE = (0.003 * np.random.default_rng(1234).standard_normal(20 * 16000)).astype(np.float32)


@pytest.fixture(scope="module", params=["whisper-tiny.en", "whisper-base"])
def runner(request: pytest.FixtureRequest) -> WhisperRunner:
    return WhisperRunner(load_whisper(request.param, default_cache_dir(), "cpu"), "cpu")


def decode(runner: WhisperRunner, jobs: list[WhisperJob]) -> tuple[list[WhisperRowOutput], list[str]]:
    """The final outputs, and every text the first row showed on the way."""
    batch = runner.start(jobs)
    seen = []
    outs = runner.step(batch)
    seen.append(outs[0].text)
    while not batch.done:
        outs = runner.step(batch)
        seen.append(outs[0].text)
    return outs, seen


def reference(
    runner: WhisperRunner, audio: np.ndarray, prompt: list[int], tokens: list[int]
) -> tuple[float, float]:
    """transformers' forward pass over prompt + tokens + EOT: Whisper's no_speech_prob (at
    <|startoftranscript|>) and the mean logprob of the tokens and the EOT under the text-only rules."""
    bundle = runner.bundle
    ids = torch.tensor([prompt + tokens + [bundle.eot_id]])
    with torch.inference_mode():
        features = log_mel_spectrogram(pad_batch([audio], N_SAMPLES), bundle.n_mels)
        logits = bundle.model(input_features=features, decoder_input_ids=ids).logits[0].float()
    no_speech = logits[prompt.index(bundle.sot_id)].softmax(-1)[bundle.no_speech_id]
    chosen = logits[len(prompt) - 1 : -1] + runner.rules.suppress_bias[0]
    chosen[0, runner.rules.begin_suppress] = NEG_INF
    logprobs = chosen.log_softmax(-1).gather(1, ids[0, len(prompt) :, None])
    return float(no_speech), float(logprobs.mean())


def test_figures_match_a_reference_forward_pass(runner: WhisperRunner) -> None:
    """Per row of a batch whose prompts differ in length (the <|startoftranscript|> column moves)."""
    speech = synthesize(SENTENCE)
    jobs = [WhisperJob(speech, prompt="Good morning. Where does the train go?"), WhisperJob(speech)]
    batch = runner.start(jobs)
    prompts = [list(row.prompt) for row in batch.rows]
    outs = decode(runner, jobs)[0]
    for job, prompt, out in zip(jobs, prompts, outs, strict=True):
        no_speech, avg = reference(runner, job.audio, prompt, out.segments[0].tokens)
        assert out.no_speech_prob == pytest.approx(no_speech, abs=2e-4)
        assert out.avg_logprob == pytest.approx(avg, abs=2e-3)
        assert -0.5 < out.avg_logprob < 0 and out.no_speech_prob < 0.1 and not out.no_speech
        assert wer(SENTENCE, out.text) < 0.3, out.text


def test_a_draft_changes_no_figure(runner: WhisperRunner) -> None:
    speech = synthesize(SENTENCE)
    plain = decode(runner, [WhisperJob(speech, encoder_context="trimmed")])[0][0]
    draft = plain.segments[0].tokens
    drafted = decode(runner, [WhisperJob(speech, encoder_context="trimmed", draft_tokens=draft)])[0][0]
    assert drafted.draft_accepted == len(draft) + 1 and drafted.text == plain.text
    assert drafted.avg_logprob == pytest.approx(plain.avg_logprob, abs=1e-4)
    assert drafted.no_speech_prob == pytest.approx(plain.no_speech_prob, abs=1e-5)


@pytest.mark.parametrize("kind", ["zeros", "noise"])
@pytest.mark.parametrize("options", [{}, {"with_timestamps": True}, {"encoder_context": "trimmed"}])
def test_silence_gives_no_text_even_on_the_way(runner: WhisperRunner, kind: str, options: dict) -> None:
    audio = SILENCE if kind == "zeros" else NOISE
    outs, seen = decode(runner, [WhisperJob(audio, **options), WhisperJob(synthesize(SENTENCE), **options)])
    silent, speech = outs
    assert silent.no_speech and silent.text == "" and silent.segments == []
    assert set(seen) == {""}, seen  # what Whisper makes up ("you", ".") is never shown, even mid-decode
    assert silent.no_speech_prob > 0.6
    assert not speech.no_speech and wer(SENTENCE, speech.text) < 0.3, speech.text
    assert all(s.compression_ratio == compression_ratio(s.text) > 0 for s in speech.segments)


def test_the_rule() -> None:
    assert not is_silent(0.59, -5.0) and not is_silent(0.61, -0.99) and not is_silent(0.9, -0.5)
    assert is_silent(0.61, -1.01) and is_silent(0.91, -0.1)
    assert compression_ratio("") == 0.0 and compression_ratio("you " * 50) > 5 > compression_ratio(SENTENCE)


def test_vad_gate_hears_speech_only() -> None:
    assert not has_speech(SILENCE) and not has_speech(NOISE) and not has_speech(np.zeros(0, np.float32))
    hum = (0.05 * np.sin(2 * np.pi * 50 * np.arange(20 * 16000) / 16000)).astype(np.float32)
    assert not has_speech(hum)
    speech = synthesize(SENTENCE)
    assert has_speech(speech) and has_speech(speech * 0.05)
    assert has_speech(np.concatenate([SILENCE, NOISE, speech]))
