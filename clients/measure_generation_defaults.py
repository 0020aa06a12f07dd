"""Measure candidate default sampling values (temperature, top_p) for the served LLM.

Each candidate answers a small set of questions the model knows (capitals it gets right greedily) many
times, through the engine itself (the same chat template, sampler and weights the server uses); an answer
is right when it names the expected city. Each also writes longer answers to a few open requests, which
count as loops when a run of words comes back (what near-greedy decoding of a small model falls into).
What `--generation-config auto` ships for the embedded SmolLM2 (engine/models/generation_defaults/) was
chosen from these tables (the README says which and why).

    python -m clients.measure_generation_defaults                  # the default grid, 10 samples each
    python -m clients.measure_generation_defaults --samples 20 --grid "0.2,0.5 0.2,0.9"
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.core import Engine
from engine.llm.chat import encode_chat
from engine.request import GenerationRequest
from engine.sampling import SamplingParams

QUESTIONS: dict[str, str] = {
    "France": "Paris", "Japan": "Tokyo", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "the United Kingdom": "London", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo",
    "Greece": "Athens", "Portugal": "Lisbon", "Canada": "Ottawa", "Austria": "Vienna", "Norway": "Oslo",
}  # fmt: skip
# Open requests with longer answers: does a candidate fall into a loop (a repeated run of words)?
OPEN_PROMPTS = [
    "Write a short story about a lighthouse.", "Explain how bees make honey.",
    "Describe a city at night.", "Give me three tips for learning to cook.",
]  # fmt: skip
DEFAULT_GRID = "1.0,1.0 0.7,0.9 0.5,0.9 0.3,0.9 0.2,0.9 0.2,0.5 0.1,0.9 0.3,0.5 0.5,0.5 0.3,0.9,20"
MAX_TOKENS = 48
OPEN_MAX_TOKENS = 160
LOOP_WORDS = 8  # a run of this many words that comes back again counts as a loop


@dataclass
class Tally:
    right: int = 0
    asked: int = 0

    def add(self, right: bool) -> None:
        self.right += right
        self.asked += 1

    def rate(self) -> str:
        return f"{self.right}/{self.asked}"


Candidate = tuple[float, float, int, float]  # temperature, top_p, top_k (0: off), repetition_penalty


def candidate(text: str) -> Candidate:
    """'T,P[,K[,R]]' -> (temperature, top_p, top_k, repetition_penalty)."""
    parts = [float(x) for x in text.split(",")] + [0.0, 1.0][max(0, len(text.split(",")) - 2) :]
    return parts[0], parts[1], int(parts[2]), parts[3]


def question(country: str) -> str:
    return f"What is the capital of {country}?"


def loops(text: str) -> bool:
    words = text.split()
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - LOOP_WORDS + 1):
        run = tuple(words[i : i + LOOP_WORDS])
        if run in seen:
            return True
        seen.add(run)
    return False


async def answers(engine: Engine, prompt: list[int], params: list[SamplingParams]) -> list[str]:
    async def one(p: SamplingParams) -> str:
        text = ""
        async for out in engine.generate(GenerationRequest(list(prompt), p)):
            text += out.text
        return text

    return await asyncio.gather(*(one(p) for p in params))


def chat_ids(engine: Engine, text: str) -> list[int]:
    return encode_chat(engine.tokenizer, [{"role": "user", "content": text}])


async def known_questions(engine: Engine) -> list[str]:
    """The countries greedy decoding names the capital of: the set the candidates are measured on."""
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    known = []
    for country in QUESTIONS:
        (text,) = await answers(engine, chat_ids(engine, question(country)), [greedy])
        right = QUESTIONS[country].lower() in text.lower()
        print(f"greedy  {country:<20} {'right' if right else 'WRONG'}  {text.strip()[:70]!r}")
        if right:
            known.append(country)
    return known


async def measure_one(
    engine: Engine, known: list[str], cand: Candidate, samples: int, seed: int
) -> tuple[Tally, dict[str, Tally], Tally]:
    """(right answers, per question, open answers that loop) for one candidate."""
    temperature, top_p, top_k, penalty = cand

    def params(max_tokens: int, count: int) -> list[SamplingParams]:
        return [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=penalty,
                seed=seed + i,
            )  # fmt: skip
            for i in range(count)
        ]

    # every request at once: the engine batches them
    replies, open_replies = await asyncio.gather(
        asyncio.gather(
            *(answers(engine, chat_ids(engine, question(c)), params(MAX_TOKENS, samples)) for c in known)
        ),
        asyncio.gather(
            *(answers(engine, chat_ids(engine, p), params(OPEN_MAX_TOKENS, 5)) for p in OPEN_PROMPTS)
        ),
    )
    total, per, looped = Tally(), {c: Tally() for c in known}, Tally()
    for country, texts in zip(known, replies, strict=True):
        for text in texts:
            right = QUESTIONS[country].lower() in text.lower()
            per[country].add(right)
            total.add(right)
    for texts in open_replies:
        for text in texts:
            looped.add(loops(text))
    return total, per, looped


async def measure(engine: Engine, grid: list[Candidate], samples: int, seed: int) -> None:
    known = await known_questions(engine)
    print(f"\nmeasured on {len(known)} questions greedy gets right, {samples} samples each; loops: of "
          f"{len(OPEN_PROMPTS) * 5} open answers ({OPEN_MAX_TOKENS} tokens), those that repeat a {LOOP_WORDS}-word run\n")  # fmt: skip
    print("| temperature | top_p | top_k | repetition_penalty | right | loops | " + " | ".join(known) + " |")
    print("|---" * (6 + len(known)) + "|")
    for cand in grid:
        started = time.perf_counter()
        total, per, looped = await measure_one(engine, known, cand, samples, seed)
        cells = " | ".join(per[c].rate() for c in known)
        pct = 100 * total.right / max(total.asked, 1)
        temperature, top_p, top_k, penalty = cand
        print(
            f"| {temperature} | {top_p} | {top_k or '-'} | {penalty} | {total.rate()} ({pct:.0f}%) | {looped.rate()} | {cells} |",
            end="",
        )
        print(f"  <!-- {time.perf_counter() - started:.0f} s -->", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    config = EngineConfig(asr=[], embed=[], device=args.device, generation_config="none")
    engine = Engine.load(config)
    await engine.start()
    try:
        await measure(engine, [candidate(c) for c in args.grid.split()], args.samples, args.seed)
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10, help="answers per question and candidate")
    parser.add_argument("--seed", type=int, default=1000, help="sample i uses seed + i")
    parser.add_argument("--grid", default=DEFAULT_GRID, help="candidates, 'T,P[,K[,R]] ...'")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
