"""Server RSS around bursts of chat work: after warm-up, right after each burst, and after idling.

    python -m clients.bench_memory                 # 3 bursts of 32 streaming chats, 128 tokens each

The engine gives back idle memory (KV-cache pages, malloc arenas) after two idle seconds, so RSS after
the idle wait should come back near the warm-up level.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import openai

from clients.server_process import ServerProcess

MODEL = "smollm2-135m-instruct"


async def burst(base_url: str, concurrency: int, max_tokens: int) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=600)

    async def one(i: int) -> None:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Write a story about the number {i}."}],
            max_tokens=max_tokens, temperature=0.7, stream=True,
        )  # fmt: skip
        async for _ in stream:
            pass

    await asyncio.gather(*[one(i) for i in range(concurrency)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle wait before each 'idle' reading")
    args = parser.parse_args()
    server = ServerProcess.start(["--asr", "whisper-tiny.en"])
    try:
        asyncio.run(burst(server.base_url, 2, 16))
        time.sleep(args.idle_s)
        print(f"after warm-up          RSS {server.memory_mb()[0]:7.0f} MiB", flush=True)
        for i in range(args.bursts):
            asyncio.run(burst(server.base_url, args.concurrency, args.max_tokens))
            print(f"right after burst {i + 1}    RSS {server.memory_mb()[0]:7.0f} MiB", flush=True)
            time.sleep(args.idle_s)
            print(f"{args.idle_s:g} s idle after it    RSS {server.memory_mb()[0]:7.0f} MiB", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
