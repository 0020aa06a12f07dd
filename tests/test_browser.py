"""The demo page in a real browser: headless Debian Chromium with a fake microphone playing synthesized speech.

Chromium loops the fake-microphone WAV, so each file is: silence, the sentence, then enough silence
for server VAD to end the turn (and, in voice chat, for the reply to finish) before the next loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.browser_setup import CHROMIUM
from tests.conftest import ARTIFACTS, LiveServer
from tests.speech import synthesize, wer

SENTENCE = "Please tell me a short story about a friendly robot who learns to paint."
QUESTION = "What is the capital of France?"
WAV_RATE = 48000
TURN_TIMEOUT_MS = 180_000  # first turn includes model warm-up on a small shared CPU
REPLY_TIMEOUT_MS = 300_000
REPLY_AUDIO_RATE = 24000  # the demo plays spoken replies as PCM16 at 24 kHz
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

# Records, inside the page, how the first assistant reply and the mic meter change over time.
RECORDER_JS = """
() => {
  window.__assistantLengths = [];
  window.__partialSeen = false;
  window.__maxLevel = 0;
  new MutationObserver(() => {
    const reply = document.querySelector('.turn.assistant .turn-text');
    if (reply) {
      const n = reply.textContent.length;
      const seen = window.__assistantLengths;
      if (seen[seen.length - 1] !== n) seen.push(n);
    }
    const partial = document.querySelector('.turn.user[data-state="partial"] .turn-text');
    if (partial && partial.textContent.trim()) window.__partialSeen = true;
  }).observe(document.getElementById('transcript'), { subtree: true, childList: true, characterData: true });
  const level = document.getElementById('level');
  new MutationObserver(() => {
    window.__maxLevel = Math.max(window.__maxLevel, Number(level.getAttribute('aria-valuenow')));
  }).observe(level, { attributes: true, attributeFilter: ['aria-valuenow'] });
}
"""


# Session scope and first in every test's arguments: a missing browser skips before the server starts.
@pytest.fixture(scope="session")
def chromium() -> Path:
    pytest.importorskip("playwright.async_api", reason="playwright is not installed: browser tests SKIPPED")
    if not CHROMIUM.exists():
        pytest.skip(
            f"BROWSER TESTS SKIPPED: {CHROMIUM} is missing. Install it with `python -m tests.browser_setup` "
            "(runs `apt-get install -y chromium` as root) or `sudo apt-get install -y chromium`."
        )
    return CHROMIUM


def speech_wav(path: Path, text: str, trailing_silence_s: float) -> Path:
    speech = synthesize(text, sample_rate=WAV_RATE)
    lead = np.zeros(WAV_RATE, dtype=np.float32)  # covers mic start-up, so the sentence is heard whole
    tail = np.zeros(int(trailing_silence_s * WAV_RATE), dtype=np.float32)
    sf.write(path, np.concatenate([lead, speech, tail]), WAV_RATE, subtype="PCM_16")
    return path


@asynccontextmanager
async def browser_page(chromium: Path, wav: Path | None, viewport: dict[str, int]) -> AsyncIterator:
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=args, headless=True)
        try:
            page = await browser.new_page(viewport=viewport)
            page.problems = []  # uncaught exceptions and console errors, for assertion messages
            page.on("pageerror", lambda exc: page.problems.append(f"pageerror: {exc}"))
            page.on(
                "console",
                lambda msg: page.problems.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            yield page
        finally:
            await browser.close()


async def open_demo(page, server: LiveServer) -> None:
    await page.goto(f"{server.base_url}/")
    if server.api_key:
        await page.evaluate("document.querySelector('.advanced').open = true")
        await page.fill("#api-key", server.api_key)
        await page.press("#api-key", "Tab")  # "change" reloads the model list with the key
    # The model picker is filled from GET /v1/models.
    # (Locator waits, not wait_for_function: the page's CSP forbids the eval that a string predicate needs.)
    await page.locator("#asr-model option").nth(1).wait_for(state="attached", timeout=30_000)
    # Keyboard, not the mouse: raise "silence to end a turn" from 500 to 800 ms so the sentence stays one turn.
    await page.focus("#silence-ms")
    for _ in range(6):
        await page.keyboard.press("ArrowRight")
    assert await page.input_value("#silence-ms") == "800"
    await page.evaluate(RECORDER_JS)


async def first_user_turn(page) -> str:
    final = page.locator('.turn.user[data-state="final"] .turn-text').first
    try:
        await final.wait_for(timeout=TURN_TIMEOUT_MS)
    except Exception as exc:
        error = await page.locator("#error-text").inner_text()
        status = await page.locator("#status").inner_text()
        raise AssertionError(
            f"no final transcript; status={status!r} error={error!r} problems={page.problems}"
        ) from exc
    return await final.inner_text()


def assert_no_problems(page, server: LiveServer) -> None:
    # With an API key the page's first GET /v1/models (sent before the key is typed) gets a 401.
    expected = "status of 401" if server.api_key else None
    problems = [p for p in page.problems if expected is None or expected not in p]
    assert not problems, problems


async def assert_no_error_banner(page) -> None:
    if await page.locator("#error").is_visible():
        message = await page.locator("#error-text").inner_text()
        raise AssertionError(f"the page shows an error: {message!r} (problems: {page.problems})")


async def test_live_captions_transcribe_the_microphone(
    chromium: Path, server: LiveServer, tmp_path: Path
) -> None:
    wav = speech_wav(tmp_path / "captions.wav", SENTENCE, trailing_silence_s=2.0)
    async with browser_page(chromium, wav, DESKTOP) as page:
        await open_demo(page, server)
        await page.click("#start")
        transcript = await first_user_turn(page)

        error_rate = wer(SENTENCE, transcript)
        assert error_rate < 0.25, f"WER {error_rate:.2f}: {transcript!r} vs {SENTENCE!r}"
        await assert_no_error_banner(page)
        assert "Connected" in await page.locator("#status").inner_text()
        assert await page.evaluate("window.__maxLevel") > 20, "the mic level meter never moved"
        await page.locator("#metric-latency", has_text="ms").wait_for(timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-demo-captions.png"))

        await page.click("#start")  # now "Stop"
        await page.locator("#start-label", has_text="Start").wait_for()
        assert_no_problems(page, server)


async def test_voice_chat_streams_a_reply(chromium: Path, server: LiveServer, tmp_path: Path) -> None:
    # Long tail: the reply should finish before the loop plays the sentence again.
    wav = speech_wav(tmp_path / "chat.wav", QUESTION, trailing_silence_s=12.0)
    async with browser_page(chromium, wav, DESKTOP) as page:
        await open_demo(page, server)
        await page.click("label[for=mode-chat]")
        assert await page.is_checked("#mode-chat")
        await page.click("#start")

        transcript = await first_user_turn(page)
        assert wer(QUESTION, transcript) < 0.25, transcript
        reply = page.locator(".turn.assistant").first
        await reply.wait_for(timeout=REPLY_TIMEOUT_MS)
        await page.locator('.turn.assistant[data-state="final"]').first.wait_for(timeout=REPLY_TIMEOUT_MS)
        text = (await reply.locator(".turn-text").inner_text()).strip()
        lengths: list[int] = await page.evaluate("window.__assistantLengths")

        assert "paris" in text.lower(), f"unexpected reply: {text!r}"
        growth = [n for n in lengths if n > 0]
        assert len(growth) >= 2 and growth == sorted(growth), f"reply did not stream: lengths {lengths}"
        await assert_no_error_banner(page)
        await page.locator("#metric-first-token", has_text="ms").wait_for(timeout=10_000)
        # The reply was spoken too ("Speak replies aloud" is on by default): the page's AudioWorklet played it.
        played = await played_reply_samples(page)
        assert played > 0.5 * REPLY_AUDIO_RATE, f"only {played} samples of reply audio were played"
        await page.locator("#metric-reply-audio", has_text="s played").wait_for(timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-demo.png"))
        assert_no_problems(page, server)


async def played_reply_samples(page, timeout_s: float = 60.0) -> int:
    """The page's count of reply samples played, once it stops growing (the reply finished playing)."""
    last, steady = -1, 0
    for _ in range(int(timeout_s / 0.5)):
        played = int(
            await page.evaluate("document.getElementById('metric-reply-audio').dataset.playedSamples")
        )
        steady = steady + 1 if played == last and played > 0 else 0
        if steady >= 4:
            break
        last = played
        await page.wait_for_timeout(500)
    return last


async def test_page_is_self_contained_accessible_and_responsive(chromium: Path, server: LiveServer) -> None:
    async with browser_page(chromium, None, PHONE) as page:
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(f"{server.base_url}/")
        await page.wait_for_load_state("networkidle")

        foreign = [url for url in requested if not url.startswith((server.base_url, "data:"))]
        assert not foreign, f"the page loaded something besides the server: {foreign}"
        assert any(url.endswith("/static/js/rtserve-realtime.js") for url in requested), requested

        # Every form control has a label, so screen readers and get_by_label can find it.
        unlabeled = await page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map((el) => el.id)"""
        )
        assert not unlabeled, f"controls without a label: {unlabeled}"
        assert await page.locator("div[onclick], span[onclick]").count() == 0

        # Reachable by keyboard: Tab from the top lands on real, focusable controls including Start.
        focused: list[str] = []
        for _ in range(12):
            await page.keyboard.press("Tab")
            focused.append(await page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        assert "start" in focused, f"Start is not reachable with Tab: {focused}"

        # Phone width: no sideways scrolling.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page is {overflow}px wider than a 390px phone screen"
        assert_no_problems(page, server)
