"""The System-2 service, started for real on 127.0.0.1, and its client."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import asgi_post, free_port
from omnir1.cli import main
from omnir1.data import rle
from omnir1.models.loading import load_models
from omnir1.service.client import System2Client, System2Error
from omnir1.systems.system2 import KeyframeRequest, System2Request, collect_rle, run_system2

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-Zq8"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, media_files) -> Path:
    root = tmp_path_factory.mktemp("served")
    shutil.copy(media_files["mp4"], root / "clip.mp4")  # 60 frames
    shutil.copy(media_files["odd_mp4"], root / "short.mp4")  # 30 frames
    # symlinks: one that stays inside the root, three that lead out of it
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(media_files["odd_mp4"], outside / "secret.mp4")
    shutil.copytree(media_files["folder"], outside / "frames")
    (root / "alias.mp4").symlink_to(root / "short.mp4")
    (root / "linked.mp4").symlink_to(outside / "secret.mp4")
    (root / "linked_frames").symlink_to(outside / "frames", target_is_directory=True)
    mixed = root / "mixed_frames"
    shutil.copytree(media_files["folder"], mixed)
    first = sorted(mixed.iterdir())[0]
    first.unlink()
    first.symlink_to(outside / "frames" / first.name)
    (root / "broken.mp4").write_bytes(b"not a video at all" * 10)
    return root


@pytest.fixture(scope="module")
def running_service(server_runner):
    """`omnir1 serve-system2` on a free port of 127.0.0.1, as a context manager yielding its URL."""

    def start(models: Path, root: Path, *extra: str):
        port = free_port()
        cmd = [sys.executable, "-m", "omnir1.cli", "serve-system2", "--models", str(models)]
        cmd += ["--port", str(port), "--data-root", str(root), *extra]
        env = {**os.environ, "OMNIR1_SYSTEM2_TOKEN": TOKEN}
        log = root.parent / f"service-{port}.log"
        return server_runner(cmd, f"http://127.0.0.1:{port}", log, env=env, wait_s=120)

    return start


@pytest.fixture(scope="module")
def service(tiny_models, data_root, running_service):
    with running_service(
        tiny_models, data_root, "--max-body-mb", "0.25", "--max-frames", "50"
    ) as url:
        yield url


BOXED = System2Request("boxed", (KeyframeRequest(3, "the grey shape", ((40, 30, 200, 120),)),))
GROUNDED = System2Request("grounded", (KeyframeRequest(10, "the grey shape"),))


def test_service_refuses_to_start_without_a_token(tiny_models, capsys):
    env_token = os.environ.pop("OMNIR1_SYSTEM2_TOKEN", None)
    try:
        assert main(["serve-system2", "--models", str(tiny_models), "--port", "1"]) == 2
        assert "OMNIR1_SYSTEM2_TOKEN" in capsys.readouterr().err
    finally:
        if env_token is not None:
            os.environ["OMNIR1_SYSTEM2_TOKEN"] = env_token


def test_auth_limits_and_errors(service):
    body = {"video": "short.mp4", "requests": [{"id": "a", "keyframes": []}]}
    assert requests.get(service + "/health").json() == {"status": "ok"}
    assert requests.post(service + "/v1/segment", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.post(service + "/v1/segment", json=body, headers=wrong).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = {**body, "padding": "x" * 300_000}  # over --max-body-mb 0.25
    answer = requests.post(service + "/v1/segment", json=big, headers=auth)
    assert answer.status_code == 413 and "body over" in answer.json()["detail"]
    long_video = {**body, "video": "clip.mp4"}  # 60 frames > --max-frames 50
    answer = requests.post(service + "/v1/segment", json=long_video, headers=auth)
    assert answer.status_code == 413 and "60 frames" in answer.json()["detail"]
    escape = {**body, "video": "../clip.mp4"}
    answer = requests.post(service + "/v1/segment", json=escape, headers=auth)
    assert answer.status_code == 422 and "inside the data root" in answer.json()["detail"]
    bad_box = {
        "video": "short.mp4",
        "requests": [{"id": "a", "keyframes": [{"frame": 1, "description": "x", "boxes": [[1]]}]}],
    }
    assert requests.post(service + "/v1/segment", json=bad_box, headers=auth).status_code == 422
    # NaN and Infinity (Python's JSON accepts them): 422 naming the field, not a 500
    one = {"video": "short.mp4", "requests": [{"id": "a", "keyframes": []}]}
    boxed = {"frame": 1, "description": "x", "boxes": [[1, 2, "NAN", 4]]}
    two = {"video": "short.mp4", "requests": [{"id": "a", "keyframes": [boxed]}]}
    bodies = {
        "fps": json.dumps({**one, "fps": "INF"}).replace('"INF"', "Infinity"),
        "boxes": json.dumps(two).replace('"NAN"', "NaN"),
    }
    for field, text in bodies.items():
        answer = requests.post(
            service + "/v1/segment", data=text, headers={**auth, "Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (field, answer.text)
        assert field in answer.json()["detail"][0]["loc"], answer.text


def test_named_videos_cannot_leave_the_data_root_through_symlinks(service):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    request = {"requests": [{"id": "a", "keyframes": []}]}
    for name in ("linked.mp4", "linked_frames", "mixed_frames", "/etc/passwd", "a/../../x"):
        answer = requests.post(
            service + "/v1/segment", json={**request, "video": name}, headers=auth
        )
        assert answer.status_code == 422, name
        assert answer.json()["detail"] == "video must be a path inside the data root", name
    inside = requests.post(
        service + "/v1/segment", json={**request, "video": "alias.mp4"}, headers=auth
    )
    assert inside.status_code == 200 and inside.json()["video"]["frames"] == 30


def test_errors_do_not_name_the_servers_paths(service, data_root):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    request = {"requests": [{"id": "a", "keyframes": []}]}
    upload = {**request, "video_b64": base64.b64encode(b"garbage" * 50).decode()}
    named = {**request, "video": "broken.mp4"}
    for body in (upload, named):
        answer = requests.post(service + "/v1/segment", json=body, headers=auth)
        assert answer.status_code == 422
        detail = answer.json()["detail"]
        assert "cannot open media" in detail
        assert "omnir1-system2-" not in detail and str(data_root) not in detail, detail
        assert str(data_root.resolve()) not in detail and TOKEN not in detail, detail


def test_an_uploads_frame_count_is_counted_not_taken_from_its_header(service, tmp_path):
    """An AVI whose headers claim 10 frames but whose stream holds 60 (over --max-frames 50)."""
    import struct

    import av

    path = tmp_path / "lying.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 4, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 8 + 16, 10)  # dwTotalFrames
    struct.pack_into("<I", data, data.find(b"strh") + 8 + 32, 10)  # dwLength
    path.write_bytes(data)
    with av.open(str(path)) as check:
        assert check.streams.video[0].frames == 10  # what the header says
    body = {
        "video_b64": base64.b64encode(bytes(data)).decode(),
        "video_suffix": ".avi",
        "requests": [{"id": "a", "keyframes": []}],
    }
    answer = requests.post(
        service + "/v1/segment", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 413
    assert "more than 50 frames" in answer.json()["detail"]


def test_the_service_loads_system_2_alone(tiny_models, data_root, monkeypatch):
    """System 1 (the 7B thinker in production) is never used by the service: not loaded."""
    import uvicorn

    from omnir1.service import TOKEN_ENV
    from omnir1.service.app import serve

    loaded = {}
    real = load_models

    def recording(*args, **kwargs):
        loaded["models"] = models = real(*args, **kwargs)
        return models

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setattr("omnir1.models.loading.load_models", recording)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: loaded.update(app=app))
    serve(tiny_models, data_root=data_root)
    models = loaded["models"]
    assert models.system1 is None and models.system1_processor is None
    assert models.grounder is not None and models.sam2 is not None and "app" in loaded


def test_a_caller_without_the_token_is_refused_before_its_body_is_read(data_root):
    """FastAPI reads and parses a JSON body before the endpoint's token dependency runs: the
    ASGI gate in front refuses first, so no one without the token makes it parse 64 MB."""
    import asyncio

    from omnir1.service.app import create_app

    app = create_app(None, data_root=data_root, token=TOKEN)
    body = json.dumps({"video": "short.mp4", "requests": [{"id": "a", "keyframes": []}]})
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/v1/segment", "/v1/batch", "/docs"):
            sent, reads = asyncio.run(asgi_post(app, path, body.encode(), headers))
            assert sent[0]["status"] == 401 and reads == 0, (headers, path)


def test_a_timed_out_batch_does_not_start_its_remaining_items(monkeypatch, data_root):
    """The caller gets 504 at the deadline; the worker thread finishes the item it is running
    (it is told to stop at its next frame; this one has none) but starts no other item of the
    batch."""
    import asyncio

    import omnir1.systems.system2 as system2
    from omnir1.service.app import Limits, create_app

    calls = []

    def slow_system2(models, video, requests, on_frame, **kwargs):
        calls.append(video)
        time.sleep(0.4)
        return []

    monkeypatch.setattr(system2, "run_system2", slow_system2)
    app = create_app(None, data_root=data_root, token=TOKEN, limits=Limits(work_timeout_s=0.2))
    item = {"video": "short.mp4", "requests": [{"id": "a", "keyframes": []}]}
    raw = json.dumps({"items": [item] * 5}).encode()

    async def call_and_wait():
        sent, _ = await asgi_post(app, "/v1/batch", raw, {"Authorization": f"Bearer {TOKEN}"})
        await asyncio.sleep(1.5)  # long enough for two more items, had they been started
        return sent

    sent = asyncio.run(call_and_wait())
    assert sent[0]["status"] == 504
    assert len(calls) == 1


def test_service_equals_in_process(service, tiny_models, data_root):
    video = data_root / "short.mp4"
    sink, expected = collect_rle()
    in_process = run_system2(load_models(tiny_models), video, [BOXED, GROUNDED], sink)
    client = System2Client(service, token=TOKEN, data_root=data_root)
    got: dict[str, dict[int, dict]] = {}

    def keep(frame, masks):
        for rid, mask in masks.items():
            got.setdefault(rid, {})[frame] = rle.encode(mask)

    remote = client.run_system2(None, video, [BOXED, GROUNDED], keep)
    assert [r.id for r in remote] == ["boxed", "grounded"]
    assert [k.boxes for r in remote for k in r.keyframes] == [
        k.boxes for r in in_process for k in r.keyframes
    ]
    assert got == expected
    assert any(rle.decode(m).any() for m in got["boxed"].values())  # SAM2 ran on the box

    # the same video uploaded instead of named by path
    uploaded: dict[str, dict[int, dict]] = {}
    System2Client(service, token=TOKEN).run_system2(
        None,
        video,
        [BOXED],
        lambda f, m: uploaded.setdefault("boxed", {}).__setitem__(f, rle.encode(m["boxed"])),
    )
    assert uploaded["boxed"] == expected["boxed"]


def test_batch_endpoint(service, data_root):
    client = System2Client(service, token=TOKEN, data_root=data_root)
    item = client.segment_body(data_root / "short.mp4", [BOXED], 1.0)
    answer = client._post("/v1/batch", {"items": [item, item]})
    first, second = answer["items"]
    assert first["results"][0]["masks"] == second["results"][0]["masks"]
    assert len(first["results"][0]["masks"]) == 30


def test_client_retries_then_fails_clearly(media_files):
    client = System2Client(f"http://127.0.0.1:{free_port()}", token="t", retries=2, backoff_s=0.01)
    started = time.monotonic()
    with pytest.raises(System2Error, match=r"unavailable after 3 attempts \(ConnectionError"):
        client.run_system2(None, media_files["odd_mp4"], [BOXED], lambda f, m: None)
    assert time.monotonic() - started >= 0.03  # backed off 0.01 + 0.02 s


def test_client_does_not_retry_a_refusal(service, data_root):
    client = System2Client(service, token="wrong", retries=3, backoff_s=5, data_root=data_root)
    started = time.monotonic()
    with pytest.raises(System2Error, match="HTTP 401: missing or wrong bearer token"):
        client.run_system2(None, data_root / "short.mp4", [BOXED], lambda f, m: None)
    assert time.monotonic() - started < 5


def test_infer_through_the_service_equals_in_process(service, tiny_models, data_root, tmp_path):
    answer = (
        '<think>x</think><answer>[{"start_time": "00:00.00", "end_time": "00:00.40", '
        '"description": "the grey shape"}]</answer>'
    )
    args = ["infer", "--video", str(data_root / "short.mp4"), "--expression", "the shape"]
    args += ["--models", str(tiny_models), "--system1-answer", answer, "--no-overlay"]
    os.environ["OMNIR1_SYSTEM2_TOKEN"] = TOKEN
    try:
        assert main([*args, "--out", str(tmp_path / "local")]) == 0
        remote = [*args, "--out", str(tmp_path / "remote"), "--system2-url", service]
        assert main([*remote, "--system2-root", str(data_root)]) == 0
    finally:
        del os.environ["OMNIR1_SYSTEM2_TOKEN"]
    local = json.loads((tmp_path / "local" / "result.json").read_text())
    via = json.loads((tmp_path / "remote" / "result.json").read_text())
    assert via["system2"] == service
    assert [k["boxes"] for k in via["keyframes"]] == [k["boxes"] for k in local["keyframes"]]
    for name in sorted(p.name for p in (tmp_path / "local" / "masks").iterdir()):
        a = np.asarray(Image.open(tmp_path / "local" / "masks" / name))
        b = np.asarray(Image.open(tmp_path / "remote" / "masks" / name))
        np.testing.assert_array_equal(a, b)


def test_grpo_rewards_through_the_service_equal_the_in_process_ones(
    tiny_models, synth_sets, monkeypatch, running_service
):
    """The trainer's reward engine with System 2 behind the service: one request per group,
    the same boxes and masks, hence the same rewards, as in process."""
    from omnir1.benchmarks.registry import load
    from omnir1.config import load_params
    from omnir1.rl.engine import context_from_sample, engine_from_params
    from omnir1.rl.warmstart import system1_answer

    monkeypatch.setenv("OMNIR1_SYSTEM2_TOKEN", TOKEN)
    root = synth_sets["revos"]
    sample = next(s for s in load("revos", root) if not s.is_null)
    ctx = context_from_sample(sample)
    visible = [f for f, area in enumerate(ctx.target.union_areas) if area]
    group = [
        system1_answer(visible, "the red circle", 2, ctx.frame_times),
        system1_answer(visible[-1:], "a shape", 1, ctx.frame_times),
        "no answer",
    ]
    params = load_params(ROOT / "params.yaml")  # the embedded grounder settings, both sides
    local = engine_from_params(params, load_models(tiny_models)).score_group(ctx, group)
    with running_service(tiny_models, root, "--params", str(ROOT / "params.yaml")) as url:
        remote_engine = engine_from_params(
            params, load_models(tiny_models, system2=False), system2_url=url, system2_root=root
        )
        remote = remote_engine.score_group(ctx, group)
    assert [o and o.boxes for o in remote.outcomes] == [o and o.boxes for o in local.outcomes]
    assert [o and o.sam_j for o in remote.outcomes] == pytest.approx(
        [o and o.sam_j for o in local.outcomes]
    )
    for a, b in zip(remote.rewards, local.rewards, strict=True):
        assert {k: r.total for k, r in a.items()} == pytest.approx(
            {k: r.total for k, r in b.items()}
        )
