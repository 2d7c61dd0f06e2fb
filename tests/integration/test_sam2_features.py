"""SAM2's image features kept across calls (`FeatureStore`) and frames prepared for SAM2 by
threads and normalised on its device: the masks must be the same bits as without either."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from omnir1.media import iter_frames
from omnir1.models.loading import load_models
from omnir1.systems import segmentation
from omnir1.systems.segmentation import IMG_MEAN, IMG_STD, BoxPrompt, FeatureStore, SAM2Frames
from omnir1.systems.system2 import KeyframeRequest, System2Request, collect_rle, run_system2

MB = 2**20
PROMPTS = [BoxPrompt("a", 5, (20, 20, 120, 90)), BoxPrompt("b", 20, (200, 60, 300, 170))]


@pytest.fixture(scope="module")
def models(tiny_models):
    return load_models(tiny_models, system1=False)


@pytest.fixture(scope="module")
def decoded(media_files) -> np.ndarray:
    """odd_mp4's 30 frames (181x333) as an array, as a shard's frames.npy holds them."""
    return np.stack([f.image for f in iter_frames(media_files["odd_mp4"])])


def masks(predictor, video, prompts=PROMPTS, **kwargs) -> dict[int, dict]:
    frames = SAM2Frames(video, predictor.image_size)
    merged: dict[int, dict] = {}
    try:
        for frame, part in segmentation.segment(predictor, frames, prompts, **kwargs):
            merged.setdefault(frame, {}).update(part)
    finally:
        frames.close()
    return merged


def frame_bytes(predictor, video: np.ndarray) -> int:
    """Bytes of one frame's stored features (its feature pyramid)."""
    frames = SAM2Frames(video[:1], predictor.image_size)
    try:
        with torch.inference_mode():
            pyramid = predictor.forward_image(frames[0][None])["backbone_fpn"]
    finally:
        frames.close()
    return segmentation._nbytes(pyramid)


def assert_same(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for t in expected:
        assert got[t].keys() == expected[t].keys(), t
        for obj in expected[t]:
            np.testing.assert_array_equal(got[t][obj], expected[t][obj], err_msg=f"{obj} {t}")


class Encoded:
    """Counts the frames through the predictor's image encoder."""

    def __init__(self, predictor):
        self.predictor, self.frames = predictor, 0

    def __enter__(self):
        forward_image = self.predictor.forward_image

        def counted(image):
            self.frames += 1
            return forward_image(image)

        self.predictor.forward_image = counted
        return self

    def __exit__(self, *exc):
        del self.predictor.forward_image


def test_frames_are_resized_by_threads_and_normalised_to_numpys_bits(media_files, decoded):
    mean = np.array(IMG_MEAN, np.float32)[:, None, None]
    std = np.array(IMG_STD, np.float32)[:, None, None]
    serial = SAM2Frames(media_files["odd_mp4"], 128, workers=0, keep={3, 29})
    threaded = SAM2Frames(media_files["odd_mp4"], 128, workers=3, keep={3, 29})
    from_array = SAM2Frames(decoded, 128, workers=2)
    try:
        assert len(serial) == len(threaded) == len(from_array) == 30
        np.testing.assert_array_equal(threaded._store, serial._store)
        assert threaded.digests == serial.digests == from_array.digests
        assert len(set(serial.digests)) == 30
        for i in (3, 29):
            np.testing.assert_array_equal(threaded.kept[i], decoded[i])
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for i in range(30):
            # what SAM2Frames gave SAM2 before: normalised by numpy on the CPU
            img = serial._store[i].transpose(2, 0, 1).astype(np.float32) / 255.0
            before = torch.from_numpy((img - mean) / std)
            for device in devices:
                now = threaded.tensor(i, device).cpu()
                assert now.dtype == torch.float32 and now.stride() == before.stride()
                assert torch.equal(now.view(torch.int32), before.view(torch.int32)), (i, device)
    finally:
        for f in (serial, threaded, from_array):
            f.close()


def test_an_undercounted_video_grows_its_store_with_threads(media_files, monkeypatch):
    from omnir1 import media

    serial = SAM2Frames(media_files["odd_mp4"], 64, workers=0)
    real = media.inspect  # container metadata that undercounts the frames
    monkeypatch.setattr(media, "inspect", lambda *a, **k: replace(real(*a, **k), num_frames=3))
    grown = SAM2Frames(media_files["odd_mp4"], 64, workers=2)
    try:
        assert len(grown) == 30 and grown.digests == serial.digests
        np.testing.assert_array_equal(grown._store[:30], serial._store)
    finally:
        serial.close()
        grown.close()


def test_expressions_of_one_video_reuse_features_with_identical_masks(models, media_files):
    """Prediction calls System 2 on one video again and again (other expressions, the other
    policy, a retry): later calls compute no frame the store holds, and the masks are the same
    bits as without the store."""

    def expression(i: int, frame: int, box) -> list[System2Request]:
        return [System2Request(str(i), (KeyframeRequest(frame, "it", (box,)),))]

    calls = [
        expression(0, 5, (20, 20, 120, 90)),
        expression(1, 20, (200, 60, 300, 170)),
        expression(2, 12, (40, 40, 140, 120)),
    ]
    video = media_files["odd_mp4"]
    store = FeatureStore(64 * MB)
    reference, cached, encoded = [], [], []
    for requests in calls:
        sink, out = collect_rle()
        run_system2(models, video, requests, sink, features=None)
        reference.append(out)
        sink, out = collect_rle()
        with Encoded(models.sam2) as count:
            run_system2(models, video, requests, sink, features=store)
        cached.append(out)
        encoded.append(count.frames)
    assert cached == reference  # RLE of every mask: the same bits
    assert encoded == [30, 0, 0]  # the first call computes every frame once, backward and forward
    assert store.hits > 0 and len(store) == 31  # 30 frames and one set of position encodings


def other_video(decoded: np.ndarray) -> np.ndarray:
    """Another video of the same size and length: a bright box over every frame."""
    other = decoded.copy()
    other[:, 40:120, 90:220] = 250
    return other


def test_different_videos_never_share_features(models, decoded):
    """Two videos of the same size and length: one's features must never serve the other;
    a frame rewritten in place misses; the same frames in another order hit (content, not
    index, is the key)."""
    other = other_video(decoded)
    alone = masks(models.sam2, other, features=None)
    store = FeatureStore(64 * MB)
    masks(models.sam2, decoded, features=store)
    with Encoded(models.sam2) as count:
        assert_same(masks(models.sam2, other, features=store), alone)
    assert count.frames == 30  # nothing from the first video

    edited = decoded.copy()
    edited[7, :40] = 255  # in place: same array shape and frame count
    reversed_ = np.ascontiguousarray(decoded[::-1])
    for video, computed in ((edited, 1), (reversed_, 0)):  # frame 7 alone; none
        expected = masks(models.sam2, video, features=None)
        with Encoded(models.sam2) as count:
            assert_same(masks(models.sam2, video, features=store), expected)
        assert count.frames == computed


def test_a_file_and_its_decoded_frames_share_features(models, media_files, decoded):
    store = FeatureStore(64 * MB)
    from_file = masks(models.sam2, media_files["odd_mp4"], features=store)
    with Encoded(models.sam2) as count:
        assert_same(masks(models.sam2, decoded, features=store), from_file)
    assert count.frames == 0


def test_another_model_or_changed_weights_never_hit(models, decoded):
    store = FeatureStore(64 * MB)
    predictor = copy.deepcopy(models.sam2)  # same weights, another model: its own key
    masks(models.sam2, decoded, features=store)
    with Encoded(predictor) as count:
        masks(predictor, decoded, features=store)
    assert count.frames == 30
    with torch.no_grad():
        next(predictor.image_encoder.parameters()).mul_(1.0)  # written in place
    with Encoded(predictor) as count:
        masks(predictor, decoded, features=store)
    assert count.frames == 30


def test_the_store_serves_the_forward_sweep_of_the_same_call(models, decoded):
    # keyframes 5 and 20, nothing kept between the sweeps by the call itself
    with Encoded(models.sam2) as count:
        alone = masks(models.sam2, decoded, feature_cache=0, features=None)
    assert count.frames == 30 + 14  # frames 6..19 computed again going forward
    with Encoded(models.sam2) as count:
        assert_same(
            masks(models.sam2, decoded, feature_cache=0, features=FeatureStore(16 * MB)), alone
        )
    assert count.frames == 30


def test_the_store_stays_within_its_bytes(models, decoded):
    one = frame_bytes(models.sam2, decoded)
    store = FeatureStore(5 * one + 2 * MB)  # the position encodings and ~5 frames
    reference = masks(models.sam2, decoded, features=None)
    frames = SAM2Frames(decoded, models.sam2.image_size)
    got: dict[int, dict] = {}
    try:
        for frame, part in segmentation.segment(models.sam2, frames, PROMPTS, features=store):
            assert 0 < store.bytes <= store.max_bytes
            got.setdefault(frame, {}).update(part)
    finally:
        frames.close()
    assert_same(got, reference)
    model = store.model_key(models.sam2)
    _, pos = store.get(model, frames.digests[-1])  # the last frame computed: still there
    # full, least recently used frames evicted as it went: what fits beside the encodings
    assert len(store) == 1 + (store.max_bytes - segmentation._nbytes(pos)) // one < 30
    assert store.get(model, frames.digests[0]) is None  # the backward sweep's frame 0: evicted
    too_big = [torch.zeros(store.max_bytes // 4 + 1)]
    assert not store.put(model, b"big", too_big, pos)
    store.resize(one)  # below the position encodings: nothing fits
    assert store.bytes <= one
    assert not FeatureStore(0).put(model, b"x", [torch.zeros(1)], [torch.zeros(1)])


def test_threads_share_one_store(models, decoded):
    """The service's workers share one set of models and one store: concurrent calls on the
    same and on different videos get the masks of calls of their own, and the store never
    passes its bound while they fill and evict it."""
    short = decoded[:12]
    prompts = [BoxPrompt("a", 3, (20, 20, 120, 90)), BoxPrompt("b", 8, (200, 60, 300, 170))]
    jobs = {
        "array": (short, prompts),
        "same frames": (short.copy(), [BoxPrompt("c", 6, (40, 40, 140, 120))]),
        "other": (other_video(short), prompts),
    }
    reference = {name: masks(models.sam2, v, p, features=None) for name, (v, p) in jobs.items()}
    one = frame_bytes(models.sam2, decoded)
    store = FeatureStore(16 * one + 2 * MB)  # evicts: 3 videos x 12 frames do not fit
    got, errors, over = {}, [], []
    done = threading.Event()

    def run(name: str) -> None:
        try:
            for _ in range(2):  # the second round may find its frames stored
                video, prompts = jobs[name]
                got[name] = masks(models.sam2, video, prompts, features=store)
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    def watch() -> None:
        while not done.is_set():
            if store.bytes > store.max_bytes:
                over.append(store.bytes)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert not over
    for name in jobs:
        assert_same(got[name], reference[name])
    assert store.hits > 0


def test_the_shared_store_size_comes_from_the_environment(monkeypatch):
    segmentation._SHARED.clear()
    try:
        monkeypatch.setenv(segmentation.FEATURE_CACHE_ENV, "0")
        assert segmentation.shared_features().max_bytes == 0
        segmentation._SHARED.clear()
        monkeypatch.setenv(segmentation.FEATURE_CACHE_ENV, "256")
        assert segmentation.shared_features().max_bytes == 256 * MB
        segmentation._SHARED.clear()
        monkeypatch.delenv(segmentation.FEATURE_CACHE_ENV)
        assert segmentation.shared_features().max_bytes == 512 * MB
        segmentation._SHARED.clear()
        monkeypatch.setenv(segmentation.FEATURE_CACHE_ENV, "lots")
        with pytest.raises(ValueError, match="OMNIR1_SAM2_FEATURE_CACHE_MB"):
            segmentation.shared_features()
    finally:
        segmentation._SHARED.clear()
