"""A live server with a tiny random Idefics3 (tests/vlm_models.py): images through every HTTP route (chat
with the openai client, data: and http URLs, streamed and not; the seed Flask Qwen2.5-VL server's raw
request shape; SGLang's /generate image_data; Responses input_image), the embedding cache's counter, and
every bad input a 400 in the OpenAI shape with the server still answering."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import LiveServer, metric, start_server
from tests.media_server import MediaServer, data_url, giant_png_header, picture, serve_media, video

RED = picture(48, (200, 30, 30), "JPEG")
BLUE = picture(48, (30, 30, 200), "PNG")
QUESTION = "What is in this image?"
MAX_IMAGES = 2
MODEL = "tiny-vlm"


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    files = {"red.jpg": RED, "blue.png": BLUE, "big.png": BLUE + b"\0" * 600_000, "clip.mp4": video()}
    with serve_media(files) as server:
        yield server


@pytest.fixture(scope="module")
def local_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's --allowed-local-media-path."""
    local = tmp_path_factory.mktemp("local_media")
    (local / "red.jpg").write_bytes(RED)
    return local


@pytest.fixture(scope="module")
def vlm(idefics3_dir: Path, local_media: Path) -> Iterator[LiveServer]:
    model_dir, local = idefics3_dir, local_media
    args = [
        "--llm", str(model_dir), "--served-model-name", MODEL, "--asr", "none", "--embed", "none", "--tts", "none",
        "--max-media-bytes", "500000", "--media-fetch-timeout", "2", "--allowed-media-domains", "127.0.0.1",
        "--allowed-local-media-path", str(local), "--limit-mm-per-prompt", json.dumps({"image": MAX_IMAGES}),
    ]  # fmt: skip
    process = start_server(args, "server_vlm.log")
    try:
        yield LiveServer(process.base_url, process.base_url.replace("http", "ws", 1), None, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def qwen_vl(qwen2_5_vl_dir: Path) -> Iterator[LiveServer]:
    """Qwen2.5-VL, the seed Flask server's model: video_url and the seed's request shape."""
    args = ["--llm", str(qwen2_5_vl_dir), "--served-model-name", MODEL, "--asr", "none", "--embed", "none", "--tts", "none",
            "--video-fps", "4", "--max-video-frames", "6"]  # fmt: skip
    process = start_server(args, "server_vlm_qwen.log")
    try:
        yield LiveServer(process.base_url, process.base_url.replace("http", "ws", 1), None, process)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(vlm: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vlm.base_url}/v1", api_key="unused", max_retries=0)


def image_message(*urls: str, text: str = QUESTION) -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


def ask(client: openai.OpenAI, messages: list[dict]) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0, extra_body={"return_token_ids": True}
    )


def streamed_text(client: openai.OpenAI, messages: list[dict]) -> str:
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0, stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_data_url_and_http_url_give_the_same_tokens(client: openai.OpenAI, media: MediaServer) -> None:
    by_data = ask(client, image_message(data_url(RED, "image/jpeg")))
    by_http = ask(client, image_message(media.url("red.jpg")))
    text_only = ask(client, [{"role": "user", "content": QUESTION}])
    assert by_data.choices[0].token_ids and by_data.choices[0].token_ids == by_http.choices[0].token_ids
    assert by_data.choices[0].message.content == by_http.choices[0].message.content
    assert by_data.usage.prompt_tokens == by_http.usage.prompt_tokens
    assert by_data.usage.prompt_tokens > text_only.usage.prompt_tokens + 10  # the image's placeholder tokens
    assert streamed_text(client, image_message(media.url("red.jpg"))) == by_http.choices[0].message.content
    assert streamed_text(client, image_message(data_url(RED))) == by_data.choices[0].message.content


def test_two_images_and_a_local_file(client: openai.OpenAI, media: MediaServer, local_media: Path) -> None:
    one = ask(client, image_message(media.url("red.jpg")))
    from_file = ask(client, image_message((local_media / "red.jpg").as_uri()))
    assert from_file.choices[0].token_ids == one.choices[0].token_ids
    two = ask(client, image_message(media.url("red.jpg"), data_url(BLUE)))
    assert two.usage.prompt_tokens > one.usage.prompt_tokens + 10
    swapped = ask(client, image_message(data_url(BLUE), media.url("red.jpg")))
    assert swapped.usage.prompt_tokens == two.usage.prompt_tokens


def test_seed_flask_request_shape(qwen_vl: LiveServer) -> None:
    """The seed server's clients: a system string and a user list [text, image_url data:image/jpeg]."""
    b64 = base64.b64encode(RED).decode()
    body = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "text", "text": QUESTION},
                {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}},
            ]},
        ],
        "max_tokens": 8, "temperature": 0,
    }  # fmt: skip
    url = f"{qwen_vl.base_url}/v1/chat/completions"
    whole = requests.post(url, json=body, timeout=120)
    assert whole.status_code == 200, whole.text
    answer = whole.json()["choices"][0]["message"]["content"]
    assert isinstance(answer, str) and whole.json()["usage"]["completion_tokens"] > 0
    pieces = []
    with requests.post(url, json={**body, "stream": True}, stream=True, timeout=120) as streamed:
        assert streamed.status_code == 200
        for line in streamed.iter_lines(decode_unicode=True):
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                pieces.append(choice["delta"].get("content") or "")
    assert "".join(pieces) == answer


def test_video_url(qwen_vl: LiveServer, media: MediaServer) -> None:
    """Frames sampled at --video-fps 4 up to --max-video-frames 6: a 2 s clip gives 6 frames; the same
    bytes by data: URL and http URL give the same tokens; a second video is past the default limit."""
    qwen = openai.OpenAI(base_url=f"{qwen_vl.base_url}/v1", api_key="unused", max_retries=0)

    def video_chat(*urls: str) -> list[dict]:
        parts = [{"type": "video_url", "video_url": {"url": url}} for url in urls]
        return [{"role": "user", "content": [*parts, {"type": "text", "text": "What happens?"}]}]

    by_http = ask(qwen, video_chat(media.url("clip.mp4")))
    by_data = ask(qwen, video_chat(data_url(video(), "video/mp4")))
    text_only = ask(qwen, [{"role": "user", "content": "What happens?"}])
    assert by_http.choices[0].token_ids == by_data.choices[0].token_ids
    assert by_http.usage.prompt_tokens > text_only.usage.prompt_tokens + 6
    with pytest.raises(openai.BadRequestError) as info:
        ask(qwen, video_chat(media.url("clip.mp4"), media.url("clip.mp4")))
    assert info.value.body["code"] == "too_many_media_items"


def test_generate_image_data(vlm: LiveServer, client: openai.OpenAI, media: MediaServer) -> None:
    prompt = f"User:<image>{QUESTION}<end_of_utterance>\nAssistant:"
    outputs = []
    for image in (
        base64.b64encode(RED).decode(),
        data_url(RED, "image/jpeg"),
        media.url("red.jpg"),
        [media.url("red.jpg")],
    ):
        body = {
            "text": prompt,
            "image_data": image,
            "sampling_params": {"max_new_tokens": 6, "temperature": 0},
        }
        response = requests.post(f"{vlm.base_url}/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        outputs.append((response.json()["output_ids"], response.json()["meta_info"]["prompt_tokens"]))
    assert all(out == outputs[0] for out in outputs) and outputs[0][0]
    url = f"{vlm.base_url}/generate"
    text_only = requests.post(
        url,
        json={"text": prompt.replace("<image>", ""), "sampling_params": {"max_new_tokens": 1}},
        timeout=60,
    )
    assert outputs[0][1] > text_only.json()["meta_info"]["prompt_tokens"] + 10
    unmarked = requests.post(
        url, json={"text": prompt.replace("<image>", ""), "image_data": media.url("red.jpg")}, timeout=60
    )
    assert unmarked.status_code == 400 and unmarked.json()["error"]["param"] == "text", unmarked.text
    no_image = requests.post(url, json={"text": prompt, "sampling_params": {"max_new_tokens": 1}}, timeout=60)
    assert no_image.status_code == 400, no_image.text


def test_responses_input_image_matches_chat(client: openai.OpenAI) -> None:
    url = data_url(BLUE)
    chat = ask(client, image_message(url))
    response = client.responses.create(
        model=MODEL, max_output_tokens=8, temperature=0,
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": QUESTION}, {"type": "input_image", "image_url": url, "detail": "auto"},
        ]}],
    )  # fmt: skip
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    follow_up = client.responses.create(
        model=MODEL, max_output_tokens=4, temperature=0, previous_response_id=response.id, input="And now?"
    )
    assert follow_up.usage.input_tokens > response.usage.input_tokens  # the stored image is prompted again


def test_a_repeated_image_is_encoded_once(client: openai.OpenAI, vlm: LiveServer) -> None:
    image = picture(40, (20, 160, 20), "PNG")  # new to this server
    before = requests.get(f"{vlm.base_url}/metrics", timeout=10).text
    first = ask(client, image_message(data_url(image)))
    between = requests.get(f"{vlm.base_url}/metrics", timeout=10).text
    second = ask(client, image_message(data_url(image), text="Describe it."))
    after = requests.get(f"{vlm.base_url}/metrics", timeout=10).text
    encoded, hits = "rtserve_vision_items_encoded_total", "rtserve_vision_cache_hits_total"
    assert metric(between, encoded) - metric(before, encoded) == 1
    assert metric(after, encoded) == metric(between, encoded)  # the second turn re-used the embedding
    assert metric(after, hits) - metric(between, hits) == 1
    assert first.choices[0].token_ids and second.choices[0].token_ids


def bad_part(url: str, kind: str = "image_url") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": kind, kind: {"url": url}}]}]


def test_bad_media_are_400s_and_the_server_survives(client: openai.OpenAI, media: MediaServer) -> None:
    param = "messages[0].content[1].image_url"
    cases = {
        "corrupt image": (bad_part(data_url(b"\x89PNG\r\n\x1a\n garbage")), "invalid_image", param),
        "20000x20000 image": (bad_part(data_url(giant_png_header())), "image_too_large", param),
        "unsupported scheme": (bad_part("ftp://127.0.0.1/red.jpg"), "unsupported_media_url", param),
        "404": (bad_part(media.url("missing")), "media_fetch_failed", param),
        "timeout": (bad_part(media.url("slow")), "media_fetch_timeout", param),
        "disallowed domain": (bad_part(media.url("red.jpg", "localhost")), "media_domain_not_allowed", param),
        "too large": (bad_part(media.url("big.png")), "media_too_large", param),
        "file outside the allowed path": (bad_part("file:///etc/hostname"), "media_path_not_allowed", param),
        "video for an image-only model": (bad_part(media.url("clip.mp4"), "video_url"), "unsupported_content_type",
                                          "messages[0].content[1].video_url"),
        "more images than the limit": (image_message(*[data_url(RED)] * (MAX_IMAGES + 1)), "too_many_media_items", "messages"),
    }  # fmt: skip
    for name, (messages, code, where) in cases.items():
        with pytest.raises(openai.BadRequestError) as info:
            ask(client, messages)
        error = info.value.body
        assert (error["code"], error["param"], error["type"]) == (code, where, "invalid_request_error"), name
        assert error["message"], name
    assert ask(client, image_message(data_url(RED))).choices[0].token_ids  # still serving


def test_an_image_for_the_text_only_default_model_is_a_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(
            model="smollm2-135m-instruct", messages=image_message(data_url(RED)), max_tokens=4
        )
    assert info.value.body["code"] == "unsupported_content_type"
    assert info.value.body["param"] == "messages[0].content[1].type"
