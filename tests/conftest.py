"""Shared fixtures: small synthetic data sets and real encoded media files, built once per
test session (per xdist worker) in temporary folders."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

SAMPLE_RATE = 16_000
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

# MLflow 3 telemetry tries to phone home from clients and servers alike; with no network here it
# once made a real server fail an alias request (KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Set
# before any test imports mlflow; servers and CLIs started by tests inherit it.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"


# warm starts of two steps each on small inputs (the warm-start tests, product and research)
WARM = """
system1: {max_pixels: 1568, max_new_tokens: 24}
grounder: {max_pixels: 6272, max_new_tokens: 24}
warm_start:
  grounder: {steps: 2, batch_size: 2, warmup_steps: 1}
  grounder_frame_stride: 20
  system1: {steps: 2, batch_size: 2, warmup_steps: 1}
tracking: {enabled: false}
"""


def end_to_end_params() -> dict:
    """params.yaml for the end-to-end runs: every stage and split, smaller sets, shorter runs."""
    import yaml

    params = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    params["data"]["synth"]["videos"] = 6
    params["warm_start"]["grounder"].update(steps=2, batch_size=2)
    params["warm_start"]["system1"].update(steps=2, batch_size=2)
    params["train"].update(num_generations=2, max_completion_length=16, max_steps=2)
    params["system1"]["max_new_tokens"] = 16
    params["grounder"]["max_new_tokens"] = 16
    params["evaluate"]["videos_per_split"] = 1
    params["probe"].update(max_videos=1, questions_per_video=1)
    return params


def short_params(folder: Path, *replacements: tuple[str, str]) -> Path:
    """params.yaml with 8-token completions (a random System 1 never stops on its own) and the
    given (old, new) text replacements, written to FOLDER/params.yaml."""
    text = PARAMS.read_text(encoding="utf-8")
    for old, new in [
        ("max_new_tokens: 256 #", "max_new_tokens: 8 #"),
        ("max_new_tokens: 64 #", "max_new_tokens: 8 #"),
        *replacements,
    ]:
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def tone(freq: float, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def gradient_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """Frames whose mean brightness encodes their index (frame i has value 4*i)."""
    return [np.full((height, width, 3), 4 * i, np.uint8) for i in range(n)]


@pytest.fixture(scope="session")
def synth_sets(tmp_path_factory) -> dict[str, Path]:
    from omnir1.data.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("synth")
    sets = {}
    for fmt in ("refavs", "revos", "mevis"):
        synthesize(SynthConfig(format=fmt, videos=6, seed=3), root / fmt, progress=False)
        sets[fmt] = root / fmt
    return sets


@pytest.fixture(scope="session")
def media_files(tmp_path_factory) -> dict[str, Path]:
    """Real encoded files: H.264+AAC mp4, mp4 without audio, mkv, webm, a frame folder, a
    corrupt file and a truncated mp4."""
    from PIL import Image

    from omnir1.media import write_video

    root = tmp_path_factory.mktemp("media")
    frames = gradient_frames(60, 180, 320)  # 10 s at 6 fps
    audio = tone(440.0, 10.0)
    files = {
        "mp4": write_video(root / "clip.mp4", frames, fps=6, audio=audio),
        "silent_mp4": write_video(root / "silent.mp4", frames, fps=6),
        "mkv": write_video(root / "clip.mkv", frames, fps=6, audio=audio),
        "webm": write_video(root / "clip.webm", frames, fps=6, audio=audio),
        "odd_mp4": write_video(
            root / "odd.mp4", gradient_frames(30, 181, 333), fps=30, audio=tone(440.0, 1.0)
        ),
    }
    folder = root / "frames"
    folder.mkdir()
    for i, f in enumerate(frames[:10]):
        Image.fromarray(f).save(folder / f"{i}.jpg", quality=95)
    files["folder"] = folder
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    files["corrupt"] = corrupt
    data = files["mp4"].read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    files["truncated"] = truncated
    return files


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A model folder of `omnir1 models init-tiny` (SAM2 at 128 px to keep tests quick)."""
    from omnir1.models.tiny import TinySizes, init_tiny

    out = tmp_path_factory.mktemp("models")
    init_tiny(out, seed=0, sizes=TinySizes(sam2_image_size=128))
    return out


@pytest.fixture(scope="session")
def hub_snapshot(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-Omni (thinker + talker + token2wav) as the Hub ships one: bf16 weights in
    sharded safetensors with their index, and the processor's files."""
    import torch
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, set_seed

    from omnir1.models.tiny import TinySizes, build_processor, build_tokenizer, thinker_config

    sizes = TinySizes(sam2_image_size=128)
    set_seed(0)
    tok = build_tokenizer(sizes)
    talker = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "embedding_size": sizes.hidden,
        "head_dim": 16,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    }
    token2wav = {
        "dit_config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "ff_mult": 1,
            "emb_dim": 16,
            "head_dim": 16,
            "repeats": 1,
            "num_embeds": 32,
            "mel_dim": 16,
            "enc_emb_dim": 16,
            "enc_dim": 16,
            "enc_channels": [16, 16, 16, 16, 48],
            "enc_kernel_sizes": [5, 3, 3, 3, 1],
            "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 16,
            "enc_res2net_scale": 2,
            "enc_se_channels": 16,
        },
        "bigvgan_config": {
            "mel_dim": 16,
            "upsample_initial_channel": 32,
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3]],
            "upsample_rates": [2],
            "upsample_kernel_sizes": [4],
        },
    }
    config = Qwen2_5OmniConfig(
        thinker_config=thinker_config(tok, sizes).to_dict(),
        talker_config=talker,
        token2wav_config=token2wav,
        enable_audio_output=False,
    )
    full = Qwen2_5OmniForConditionalGeneration(config).to(torch.bfloat16)
    out = tmp_path_factory.mktemp("hub") / "Qwen2.5-Omni-tiny"
    full.save_pretrained(out, max_shard_size="1MB")
    build_processor(tok).save_pretrained(out)
    speaker = {"bos_token": 1, "cond": torch.zeros(16), "ref_mel": torch.zeros(4, 16)}
    torch.save({"Chelsie": speaker}, out / "spk_dict.pt")  # the talker's voices
    return out


def kill_when(
    command: list[str],
    *,
    cwd: Path,
    env: dict,
    log: Path,
    appears: Path,
    pattern: str,
    timeout_s: float = 1200,
) -> None:
    """Run `command` in its own session (output to `log`) and SIGKILL it, with every process it
    started, as soon as a file matching `pattern` appears under `appears`."""
    import signal
    import subprocess
    import time

    with log.open("wb") as fh:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while not list(appears.glob(pattern)):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def asgi_post(app, path: str, body: bytes, headers: dict[str, str]) -> tuple[list, int]:
    """POST to an ASGI app in process: (messages sent back, times the body was asked for)."""
    return await asgi_call(app, "POST", path, body, headers)


async def asgi_call(app, method: str, path: str, body: bytes, headers: dict[str, str]):
    """A call to an ASGI app in process: (messages sent back, times the body was asked for)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []
    reads = 0

    async def receive():
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent, reads


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(cmd: list[str], url: str, log_path: Path, *, env=None, cwd=None, wait_s=180):
    """Start `cmd`, wait until `url`/health answers 200, yield; stop it afterwards. A server
    that exits or never answers fails the test with the end of its log."""
    import subprocess
    import time

    import requests

    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{cmd[0]} did not start:\n" + log_path.read_text()[-3000:])
                try:
                    if requests.get(url + "/health", timeout=1).status_code == 200:
                        break
                except requests.RequestException:  # refused, or too slow to answer yet
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server_runner():
    """`running_server` for test modules (conftest helpers are not importable there)."""
    return running_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (SQLite store, artifacts served by it)."""
    import sys

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    cmd += ["--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, url, root / "server.log", cwd=root) as url:
        yield url
