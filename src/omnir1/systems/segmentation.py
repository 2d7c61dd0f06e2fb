"""System 2, second half: SAM2.1 turns keyframe boxes into masks on every frame of the video.

Frames reach SAM2 through `SAM2Frames`: the video is decoded once, streamed, each frame resized
to SAM2's square input by a few threads and kept in a uint8 memory-mapped file, and normalised
only when SAM2 asks for it, on SAM2's device; memory stays bounded whatever the video's length
(SAM2's own per-frame state still grows with the frames it tracks).

`segment` takes box prompts of many objects at once (for GRPO: every object of every completion
of a group). Each object is tracked from its own first prompt, backward to frame 0 and then
forward to the last frame, so its masks never depend on the other objects; objects with
identical prompts are tracked once, objects prompted on the same frames run as one SAM2 batch,
and all of them advance in lockstep so that each frame's image features are computed once per
sweep and shared.

`FeatureStore` keeps SAM2's image features across calls (the process shares one, see
`shared_features`): a frame whose features any earlier call computed with the same model (the
other expressions of a video, the groups of a training step on one video, a retried call, the
forward sweep after the backward one) skips the image encoder. Frames are identified by their
content at SAM2's input size, never by a path or an index: a different video cannot hit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import os
import tempfile
import threading
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

IMG_MEAN = (0.485, 0.456, 0.406)  # SAM2's normalisation
IMG_STD = (0.229, 0.224, 0.225)


class SAM2Frames:
    """Frames of a video at SAM2's input size, decoded once into a memory-mapped file.

    `video` is a video file or frame folder, or its frames already decoded: an (N, H, W, 3)
    uint8 array, such as a preprocessed shard's memory-mapped `frames.npy`.
    `keep`: frame indices whose native-resolution image is kept too (`kept[i]`), so that the
    grounder's keyframes come from the same decoding pass.
    `workers`: threads that resize frames while the next ones decode (PIL releases the GIL
    while it resizes; at most twice as many frames wait for them, so memory stays a few
    frames); 0 resizes in the calling thread. `digests[i]` identifies frame i by its content
    at SAM2's size (what `FeatureStore` keys features by).
    """

    def __init__(
        self,
        video: str | Path | np.ndarray,
        image_size: int,
        *,
        folder_fps: float = 1.0,
        keep: set[int] | frozenset[int] = frozenset(),
        workers: int | None = None,
    ):
        from omnir1.media import inspect, iter_frames

        if isinstance(video, np.ndarray):
            count, self.video_height, self.video_width = video.shape[:3]
            images = iter(video)
        else:
            info = inspect(video, folder_fps=folder_fps)
            self.video_height, self.video_width = info.height, info.width
            count = info.num_frames
            images = (f.image for f in iter_frames(video, folder_fps=folder_fps))
        self.image_size = image_size
        self._dir = tempfile.TemporaryDirectory(prefix="omnir1-sam2-frames-")
        try:
            self._store, self.digests = self._fill(images, count, keep, workers)
        except BaseException:
            self._dir.cleanup()
            raise
        self.num_frames = len(self.digests)
        self._constants: dict[object, tuple] = {}

    def _fill(self, images, count: int, keep, workers: int | None):
        size = self.image_size
        path = Path(self._dir.name) / "frames.u8"
        store = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3)
        )
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        self.kept: dict[int, np.ndarray] = {}
        digests: list[bytes] = []
        pending: deque = deque()  # resizes under way, in frame order
        pool = ThreadPoolExecutor(workers, "omnir1-sam2-frames") if workers > 0 else None
        try:
            for n, image in enumerate(images):
                if n in keep:
                    self.kept[n] = np.array(image)  # a copy: a memory-mapped row stays on disk
                if n == store.shape[0]:  # container metadata undercounted: grow the store
                    while pending:  # the store is replaced: nothing may still write to it
                        digests.append(pending.popleft().result())
                    store.flush()
                    store = _grow(path, store, store.shape[0] * 2 + 16)
                if pool is None:
                    digests.append(_resize_into(store, n, image))
                    continue
                pending.append(pool.submit(_resize_into, store, n, image))
                if len(pending) > 2 * workers:
                    digests.append(pending.popleft().result())
            while pending:
                digests.append(pending.popleft().result())
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        store.flush()
        return store, digests

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int):
        return self.tensor(index)

    def tensor(self, index: int, device=None):
        """Frame `index` normalised as SAM2 expects it: (3, S, S) float32 on `device`. The
        uint8 frame travels (a quarter of the float32 bytes to a GPU) and is normalised there
        with the same elementwise IEEE operations in the same order as numpy's
        `(x / 255 - mean) / std` on the CPU, so the bits are the same (tested); the divisors
        are tensors on the device, since CUDA divides by a CPU scalar as a multiplication by
        its reciprocal. The layout is the numpy-made one SAM2 always got (channels last in
        memory). One frame at a time: SAM2 asks for frames one by one in sweep order, and a
        batch would hold several float frames (12 MB each at 1024 px) on the device to save a
        few kernel launches."""
        import torch

        if not 0 <= index < self.num_frames:
            raise IndexError(index)
        device = torch.device("cpu" if device is None else device)
        if device not in self._constants:
            as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=device)
            self._constants[device] = (
                as_tensor([255.0] * 3).view(3, 1, 1),
                as_tensor(IMG_MEAN).view(3, 1, 1),
                as_tensor(IMG_STD).view(3, 1, 1),
            )
        scale, mean, std = self._constants[device]
        pixels = torch.from_numpy(self._store[index]).to(device)  # (S, S, 3) uint8
        return pixels.permute(2, 0, 1).float().div_(scale).sub_(mean).div_(std)

    def close(self) -> None:
        self._store = None
        self._dir.cleanup()


def _resize_into(store: np.memmap, n: int, image) -> bytes:
    """Resize one frame into row `n` of the store; the digest of what SAM2 will see."""
    from PIL import Image

    size = store.shape[1]
    # SAM2 resizes with PIL's default filter to a square, ignoring the aspect ratio
    row = np.asarray(Image.fromarray(np.asarray(image)).resize((size, size)))
    store[n] = row
    # SHA-256 through OpenSSL (CPU SHA extensions: ~1.7 GB/s here, twice BLAKE2b's), off the
    # GIL: ~2 ms for a 1024 px frame, in the resizing thread
    return hashlib.sha256(np.ascontiguousarray(row)).digest()


class _OnDevice:
    """A SAM2Frames as SAM2's `images`: frames normalised on SAM2's device."""

    def __init__(self, frames: SAM2Frames, device):
        self.frames, self.device = frames, device

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        return self.frames.tensor(index, self.device)


def _grow(path: Path, store: np.memmap, rows: int) -> np.memmap:
    grown = np.lib.format.open_memmap(
        path.with_suffix(".grow"), mode="w+", dtype=np.uint8, shape=(rows, *store.shape[1:])
    )
    grown[: store.shape[0]] = store
    grown.flush()
    path.with_suffix(".grow").replace(path)
    return np.lib.format.open_memmap(path, mode="r+")


@dataclass(frozen=True)
class BoxPrompt:
    obj: object  # the caller's object key (e.g. (completion, object index))
    frame: int  # frame index in the video
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in native pixels


def _init_state(predictor, frames: SAM2Frames) -> dict:
    """SAM2's `init_state`, with our lazily normalised frames instead of a JPEG folder."""
    device = predictor.device
    state = {
        "images": _OnDevice(frames, device),
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": False,
        "video_height": frames.video_height,
        "video_width": frames.video_width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    return state


FEATURE_CACHE_ENV = "OMNIR1_SAM2_FEATURE_CACHE_MB"
DEFAULT_FEATURE_CACHE_MB = 512


class FeatureStore:
    """SAM2 backbone features kept across calls: an LRU bounded by `max_bytes`, safe to share
    between threads (the System-2 service's workers share one).

    A frame's features are keyed by the model (`model_key`: the image encoder's identity, the
    version counters of its weights, so weights changed in place never serve old features, its
    device, dtype and input size) and by the frame's content (`SAM2Frames.digests`: the
    SHA-256 of the uint8 frame at SAM2's size, which is all the features depend on). So a path,
    a decoded array or a shard's memory-mapped frames of the same video share features, and a
    different video, or an array rewritten in place, never hits.

    What is stored: the feature pyramid (`backbone_fpn`; `vision_features` is its last level).
    Its position encodings depend only on the pyramid's shapes (5x its bytes at SAM2.1's
    sizes): one copy per model, checked bit for bit against every frame stored after it, on
    the model's device. On a GPU the pyramid is copied to pinned CPU memory and back on a hit:
    for SAM2.1 hiera-l at 1024 px, by its shapes, 10.5 MB a frame under bf16 autocast (16.8 MB
    in float32; the position encodings 88 MB once), well under a millisecond each way over
    PCIe against tens of milliseconds for the image encoder, and the GPU's memory stays with
    SAM2's tracking and the trainer. On the CPU the stored tensors are the computed ones.
    `max_bytes` counts the pyramids and the encodings; 0 stores nothing. Sizing: a video is
    reused across calls only when all its frames fit (a sweep through a longer one evicts its
    own frames first, as LRU does): a 200-frame clip at 1024 px needs ~2.2 GB with its
    encodings; the tiny models' 64 and 128 px pyramids are 64 and 256 KB a frame.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[tuple, int]] = OrderedDict()  # value, bytes
        self._bytes = 0
        self._tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._next_token = itertools.count()
        self.hits = self.misses = self.refused = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def model_key(self, predictor) -> tuple:
        """The predictor's image encoder as a key part (shared by `copy.copy`s of it)."""
        modules = [predictor.image_encoder]
        if predictor.use_high_res_features_in_sam:  # forward_image projects two levels
            modules += [predictor.sam_mask_decoder.conv_s0, predictor.sam_mask_decoder.conv_s1]
        params = [p for m in modules for p in m.parameters()]
        with self._lock:  # a fresh token per encoder, never reused (an id() would be)
            token = self._tokens.get(predictor.image_encoder)
            if token is None:
                token = self._tokens[predictor.image_encoder] = next(self._next_token)
        versions = sum(p._version for p in params)  # in-place updates bump these
        return (token, versions, str(predictor.device), str(params[0].dtype), predictor.image_size)

    def get(self, model: tuple, digest: bytes) -> tuple[list, list] | None:
        """(pyramid, position encodings) stored for a frame, or None."""
        with self._lock:
            frame = self._entries.get((model, digest))
            pos = self._entries.get((model, "pos"))
            if frame is None or pos is None:
                self.misses += 1
                return None
            self._entries.move_to_end((model, digest))
            self._entries.move_to_end((model, "pos"))
            self.hits += 1
            return list(frame[0]), list(pos[0])

    def put(self, model: tuple, digest: bytes, pyramid: Sequence, pos: Sequence) -> bool:
        """Store a frame's features (`pyramid` already where it is to be kept); False when
        they are not kept (larger than the bound, or position encodings unlike the stored
        ones)."""
        if not self.max_bytes:
            return False
        with self._lock:  # the comparison too: no other thread's encodings slip in between
            known = self._entries.get((model, "pos"))
            if known is not None and not _same_tensors(known[0], pos):
                self.refused += 1  # SAM2 makes them from shapes alone: never mix others in
                return False
            if known is None and not self._insert((model, "pos"), pos):
                self.refused += 1
                return False
            self._entries.move_to_end((model, "pos"))  # evicted last of this model
            if not self._insert((model, digest), pyramid):
                self.refused += 1
                return False
            return True

    def _insert(self, key: tuple, tensors: Sequence) -> bool:
        size = _nbytes(tensors)
        if size > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        while self._entries and self._bytes + size > self.max_bytes:
            _, (_, freed) = self._entries.popitem(last=False)
            self._bytes -= freed
        self._entries[key] = (tuple(tensors), size)
        self._bytes += size
        return True

    def resize(self, max_bytes: int) -> None:
        """A new bound; the least recently used features go until the store fits it."""
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            while self._entries and self._bytes > self.max_bytes:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _same_tensors(a: Sequence, b: Sequence) -> bool:
    import torch

    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


def _nbytes(tensors: Sequence) -> int:
    """Bytes the tensors hold (storages shared between them counted once)."""
    storages = {}
    for t in tensors:
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
    return sum(storages.values())


_SHARED: dict[str, FeatureStore] = {}  # made on first use, under its lock
_SHARED_LOCK = threading.Lock()


def shared_features() -> FeatureStore:
    """The process's FeatureStore: OMNIR1_SAM2_FEATURE_CACHE_MB MiB (default 512; 0 turns it
    off), read when it is first used. An environment setting, not a params.yaml one: it
    changes no result (masks are the same bits), only how much memory buys speed, which is the
    host's business (the service's and the trainer's pods set it), and a params.yaml key
    would rerun DVC stages whose outputs it cannot change."""
    with _SHARED_LOCK:
        if "store" not in _SHARED:
            value = os.environ.get(FEATURE_CACHE_ENV, "").strip()
            try:
                mb = float(value) if value else DEFAULT_FEATURE_CACHE_MB
            except ValueError:
                raise ValueError(
                    f"{FEATURE_CACHE_ENV} must be a number of MiB, got {value!r}"
                ) from None
            _SHARED["store"] = FeatureStore(int(mb * 2**20))
        return _SHARED["store"]


class _FeatureCache:
    """Backbone features shared by every inference state of one `segment` call. SAM2 keeps
    only the latest frame's, per state: without this each state would compute every frame
    again. Kept: the frame being computed now (the states step through it one after another),
    prompted frames (read again when the states start), and `keep` frames the forward sweep
    will read after the backward sweep, until that sweep has passed them. Frames it does not
    hold are looked up in `features` (a FeatureStore, across calls) before SAM2 computes them,
    and what SAM2 computes goes there too."""

    def __init__(
        self,
        pinned: set[int],
        keep: set[int],
        frames: SAM2Frames,
        features: FeatureStore | None = None,
        model: tuple = (),
    ):
        self.pinned, self.keep = pinned, keep
        self.frames, self.features, self.model = frames, features, model
        self.store: dict[int, object] = {}
        self.current: int | None = None

    def bind(self, predictor) -> None:
        original = type(predictor)._get_image_feature
        cache = self

        def cached(self, inference_state, frame_idx, batch_size):
            hit = cache.store.get(frame_idx)
            if hit is None:
                hit = cache.stored(frame_idx, inference_state["device"])
                if hit is not None:
                    cache.store[frame_idx] = hit
            if hit is not None:
                inference_state["cached_features"] = {frame_idx: hit}
            features = original(self, inference_state, frame_idx, batch_size)
            if hit is None:
                computed = inference_state["cached_features"][frame_idx]
                cache.store[frame_idx] = computed
                cache.keep_for_later(frame_idx, computed)
            if cache.current != frame_idx:
                cache.release(cache.current)
                cache.current = frame_idx
            return features

        predictor._get_image_feature = types.MethodType(cached, predictor)

    def stored(self, frame: int, device) -> tuple | None:
        """SAM2's (image, backbone_out) of `frame` from the FeatureStore, on `device`."""
        if self.features is None or not self.features.max_bytes:
            return None
        got = self.features.get(self.model, self.frames.digests[frame])
        if got is None:
            return None
        pyramid, pos = got
        # from pinned memory the copies overlap the work queued before them; the caching
        # host allocator keeps a pinned block alive until its copy is done, even if evicted
        pyramid = [t.to(device, non_blocking=True) for t in pyramid]
        image = self.frames.tensor(frame, device).unsqueeze(0)  # as SAM2 makes it on a miss
        return image, {
            "vision_features": pyramid[-1],
            "vision_pos_enc": pos,
            "backbone_fpn": pyramid,
        }

    def keep_for_later(self, frame: int, computed: tuple) -> None:
        """Put SAM2's freshly computed features of `frame` in the FeatureStore."""
        if self.features is None or not self.features.max_bytes:
            return
        _, out = computed
        pyramid, pos = out["backbone_fpn"], out["vision_pos_enc"]
        if out.get("vision_features") is not pyramid[-1] or len(pos) != len(pyramid):
            return  # not the structure stored entries are rebuilt into
        self.features.put(self.model, self.frames.digests[frame], _for_storage(pyramid), pos)

    def release(self, frame: int | None) -> None:
        """Forget `frame` unless a later read is planned."""
        if frame is not None and frame not in self.pinned and frame not in self.keep:
            self.store.pop(frame, None)

    def passed(self, frame: int) -> None:
        """The forward sweep is past `frame`: nothing reads it again."""
        self.pinned.discard(frame)
        self.keep.discard(frame)
        if frame != self.current:
            self.store.pop(frame, None)


def _for_storage(tensors: Sequence) -> list:
    """Tensors as the FeatureStore keeps them: CUDA ones copied to pinned CPU memory (a
    blocking copy: the entry is complete once stored, whichever stream or thread reads it),
    CPU ones as they are (SAM2 never writes into its features)."""
    import torch

    out = []
    for t in tensors:
        if t.device.type == "cuda":
            host = torch.empty_like(t, device="cpu", pin_memory=True)  # same strides
            host.copy_(t)
            t = host
        out.append(t)
    return out


def _drop_old_outputs(memory: dict, frame: int, reverse: bool, window: int, first: int) -> None:
    """Forget non-conditioning outputs SAM2 will not read again. Backward, frames more than
    `window` above the current one, except the `window` frames below the first keyframe that
    the forward pass reads when it starts; forward, frames more than `window` below."""
    if reverse:
        old = frame + window + 1
        if old >= first - window:
            return
    else:
        old = frame - window - 1
    memory["non_cond_frame_outputs"].pop(old, None)


@dataclass
class _Track:
    """Objects prompted on the same frames, tracked as one batch: their memories have the same
    frames, so SAM2 runs them in one forward pass per frame (results equal to one pass per
    object up to the rounding of batched matrix products: tested). `memory` is SAM2's output
    dict, batched over the objects."""

    frames: tuple[int, ...]  # prompted frames, ascending
    objects: list[tuple]  # prompt signatures, in batch order
    state: dict
    memory: dict

    @property
    def start(self) -> int:
        return self.frames[0]


def _start_track(predictor, frames: SAM2Frames, signatures: list[tuple]) -> _Track:
    """Add every object's boxes to a fresh state, let SAM2 encode the prompted frames'
    memories, then stack the objects' outputs into one batch."""
    import torch

    state = _init_state(predictor, frames)
    for sam_id, sig in enumerate(signatures, start=1):
        for frame, box in sig:
            predictor.add_new_points_or_box(
                state, frame_idx=frame, obj_id=sam_id, box=np.array(box, np.float32)
            )
    predictor.propagate_in_video_preflight(state)
    per_obj = [state["output_dict_per_obj"][i] for i in range(len(signatures))]
    cond = {}
    for frame, _ in signatures[0]:
        outs = [o["cond_frame_outputs"][frame] for o in per_obj]
        merged = {
            key: torch.cat([o[key] for o in outs])
            for key in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")
        }
        merged["maskmem_pos_enc"] = [
            x.expand(len(outs), -1, -1, -1) for x in state["constants"]["maskmem_pos_enc"]
        ]
        cond[frame] = merged
    memory = {"cond_frame_outputs": cond, "non_cond_frame_outputs": {}}
    return _Track(tuple(f for f, _ in signatures[0]), signatures, state, memory)


def _track_frame(predictor, track: _Track, frame: int, reverse: bool) -> np.ndarray:
    """(objects, H, W) masks of the track's objects on `frame`, at the video's size; the
    frame's output joins the track's memory (as `propagate_in_video` does, one object at a
    time)."""
    cond = track.memory["cond_frame_outputs"].get(frame)
    if cond is not None:
        low_res = cond["pred_masks"]
    else:
        out, low_res = predictor._run_single_frame_inference(
            inference_state=track.state,
            output_dict=track.memory,
            frame_idx=frame,
            batch_size=len(track.objects),
            is_init_cond_frame=False,
            point_inputs=None,
            mask_inputs=None,
            reverse=reverse,
            run_mem_encoder=True,
        )
        track.memory["non_cond_frame_outputs"][frame] = out
    _, video_res = predictor._get_orig_video_res_output(track.state, low_res)
    return (video_res[:, 0] > 0).cpu().numpy()


def _float_memories(predictor) -> None:
    """SAM2 stores mask memories in bfloat16 and relies on CUDA autocast to mix them with
    float32 weights. Without autocast (CPU) a memory bank made only of stored memories fails
    ("mat1 and mat2 must have the same dtype"): hand them back as float32 (the bfloat16
    rounding is kept, so values match what a GPU run stores)."""
    cls = type(predictor)

    def single_frame(self, *args, **kwargs):
        out, masks = cls._run_single_frame_inference(self, *args, **kwargs)
        if out.get("maskmem_features") is not None:
            out["maskmem_features"] = out["maskmem_features"].float()
        return out, masks

    def memory_encoder(self, *args, **kwargs):
        features, pos = cls._run_memory_encoder(self, *args, **kwargs)
        return features.float(), pos

    predictor._run_single_frame_inference = types.MethodType(single_frame, predictor)
    predictor._run_memory_encoder = types.MethodType(memory_encoder, predictor)


@functools.cache
def _hole_filling_kernel() -> bool:
    """Whether sam2 was built with its CUDA extension (`sam2._C`)."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def segment(
    predictor,
    frames: SAM2Frames,
    prompts: Sequence[BoxPrompt],
    *,
    feature_cache: int = 16,
    prune: bool = True,
    features: FeatureStore | Literal["shared"] | None = "shared",
) -> Iterator[tuple[int, dict[object, np.ndarray]]]:
    """Masks (native size, bool) of every prompted object on every frame, as (frame,
    {object: mask}) parts: every object's mask on every frame exactly once, a frame possibly
    in two parts (see below).

    Each object is tracked from its own first prompt, backward to frame 0 and then forward to
    the last frame, so its masks depend on its prompts alone: never on which other objects
    share the call. Objects with identical prompts are tracked once; objects prompted on the
    same frames run as one batch (`_Track`). The tracks advance in lockstep through one
    backbone-feature cache: a backward sweep from the latest start to frame 0, then a forward
    sweep from the earliest start to the end, each frame's features computed once per sweep
    that needs them; up to `feature_cache` frames between the earliest and the latest start
    are kept from the backward sweep for the forward one. Frames before the earliest start
    come whole, in reverse order, during the backward sweep; later frames come in the forward
    sweep, those up to the latest start in two parts (the objects that start after the frame
    were given in the backward sweep).

    `prune` drops SAM2's per-frame outputs once they fall out of the window its memory reads
    (the last num_maskmem frames and max_obj_ptrs_in_encoder object pointers), so that the
    state stays bounded on long videos; results are unchanged (tested).

    `features`: where image features are looked up before SAM2 computes them and kept
    after ("shared": the process's `shared_features()`; None: within this call only). The
    masks are the same bits either way (tested)."""
    import torch

    if predictor.non_overlap_masks or predictor.non_overlap_masks_for_mem_enc:
        raise ValueError("SAM2 with non-overlapping masks couples objects: not supported")
    if features == "shared":
        features = shared_features()
    model = features.model_key(predictor) if features is not None else ()
    # this call's own view of the predictor (the weights shared): the feature cache and the
    # float-memory hooks below are bound to it, never to a predictor other threads run (the
    # service's workers share one set of models per device)
    predictor = copy.copy(predictor)
    by_obj: dict[object, list[BoxPrompt]] = {}
    for p in prompts:
        if not 0 <= p.frame < len(frames):
            raise ValueError(f"prompt frame {p.frame} outside the video's {len(frames)} frames")
        by_obj.setdefault(p.obj, []).append(p)
    if not by_obj:
        return
    # objects with identical prompts are tracked once
    signature = {
        obj: tuple(sorted((p.frame, tuple(round(v, 3) for v in p.box)) for p in ps))
        for obj, ps in by_obj.items()
    }
    batches: dict[tuple[int, ...], list[tuple]] = {}  # prompted frames -> signatures
    for sig in dict.fromkeys(signature.values()):
        batches.setdefault(tuple(f for f, _ in sig), []).append(sig)
    starts = sorted({f[0] for f in batches})
    keyframes = {f for fs in batches for f in fs}
    between = sorted(set(range(starts[0] + 1, starts[-1])) - keyframes)
    cache = _FeatureCache(set(keyframes), set(between[:feature_cache]), frames, features, model)
    cache.bind(predictor)
    window = max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder)
    on_cuda = predictor.device.type == "cuda"
    if not on_cuda:
        _float_memories(predictor)
    # on CUDA, bfloat16 autocast as in SAM2's own examples
    precision = (
        torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    )

    rows = {sig: i for sigs in batches.values() for i, sig in enumerate(sigs)}  # batch row
    callers = {sig: [obj for obj, s in signature.items() if s == sig] for sig in rows}

    def step(track: _Track, frame: int, reverse: bool) -> dict[object, np.ndarray]:
        masks = _track_frame(predictor, track, frame, reverse)
        if prune:
            _drop_old_outputs(track.memory, frame, reverse, window, track.start)
        return {obj: masks[rows[sig]] for sig in track.objects for obj in callers[sig]}

    if not (on_cuda and _hole_filling_kernel()):
        # SAM2 fills small mask holes (fill_hole_area=8) with a CUDA kernel of its extension;
        # without one it skips the step, warning on every frame: skip it quietly (the same
        # masks; a warnings filter per call would race between the service's threads)
        predictor.fill_hole_area = 0
    with torch.inference_mode(), precision:
        tracks = [_start_track(predictor, frames, sigs) for sigs in batches.values()]
        for frame in range(starts[-1], -1, -1):
            part: dict[object, np.ndarray] = {}
            for track in tracks:
                if track.start >= frame and track.start > 0:  # none back from frame 0
                    part.update(step(track, frame, reverse=True))
            if part:
                yield frame, part
        for frame in range(starts[0], len(frames)):
            part = {}
            for track in tracks:
                if track.start <= frame:
                    masks = step(track, frame, reverse=False)
                    if not (track.start == frame > 0):  # a start's frame came backward
                        part.update(masks)
            cache.passed(frame)
            if part:
                yield frame, part
