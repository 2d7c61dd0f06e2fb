"""System 2, second half: SAM2.1 turns keyframe boxes into masks on every frame of the video.

Frames reach SAM2 through `SAM2Frames`: the video is decoded once, streamed, each frame resized
to SAM2's square input and kept in a uint8 memory-mapped file, and normalised only when SAM2
asks for it; memory stays bounded whatever the video's length (SAM2's own per-frame state still
grows with the frames it tracks).

`segment` takes box prompts of many objects at once (for GRPO: every object of every completion
of a group), deduplicates objects whose prompts are identical, tracks them all in one inference
state, and computes the image features of each frame once (an LRU cache shared by the backward
and forward passes). Each object gets its masks on every frame: backward from its group's first
keyframe to frame 0, then forward to the last frame.
"""

from __future__ import annotations

import contextlib
import tempfile
import types
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMG_MEAN = (0.485, 0.456, 0.406)  # SAM2's normalisation
IMG_STD = (0.229, 0.224, 0.225)


class SAM2Frames:
    """Frames of a video at SAM2's input size, decoded once into a memory-mapped file.

    `video` is a video file or frame folder, or its frames already decoded: an (N, H, W, 3)
    uint8 array, such as a preprocessed shard's memory-mapped `frames.npy`.
    `keep`: frame indices whose native-resolution image is kept too (`kept[i]`), so that the
    grounder's keyframes come from the same decoding pass.
    """

    def __init__(
        self,
        video: str | Path | np.ndarray,
        image_size: int,
        *,
        folder_fps: float = 1.0,
        keep: set[int] | frozenset[int] = frozenset(),
    ):
        from PIL import Image

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
        path = Path(self._dir.name) / "frames.u8"
        store = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(count, image_size, image_size, 3)
        )
        n = 0
        self.kept: dict[int, np.ndarray] = {}
        for image in images:
            if n in keep:
                self.kept[n] = np.array(image)  # a copy: a memory-mapped row stays on disk
            if n == count:  # container metadata undercounted: grow the store
                store.flush()
                store = _grow(path, store, count * 2 + 16)
                count = store.shape[0]
            # SAM2 resizes with PIL's default filter to a square, ignoring the aspect ratio
            img = Image.fromarray(np.asarray(image)).resize((image_size, image_size))
            store[n] = np.asarray(img)
            n += 1
        store.flush()
        self._store = store
        self.num_frames = n
        self._mean = np.array(IMG_MEAN, np.float32)[:, None, None]
        self._std = np.array(IMG_STD, np.float32)[:, None, None]

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int):
        import torch

        if not 0 <= index < self.num_frames:
            raise IndexError(index)
        img = self._store[index].transpose(2, 0, 1).astype(np.float32) / 255.0
        return torch.from_numpy((img - self._mean) / self._std)

    def close(self) -> None:
        self._store = None
        self._dir.cleanup()


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
        "images": frames,
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


def _with_feature_cache(predictor, capacity: int, pinned: set[int]) -> None:
    """Bind a cache of backbone features to this predictor. SAM2 keeps only the latest frame's,
    so a keyframe's features, computed when its box is added, would be computed again when a
    pass reaches it. Keyframes stay pinned; other frames go through a small LRU."""
    original = type(predictor)._get_image_feature
    cache: OrderedDict = OrderedDict()

    def cached(self, inference_state, frame_idx, batch_size):
        hit = cache.get(frame_idx)
        if hit is not None:
            cache.move_to_end(frame_idx)
            inference_state["cached_features"] = {frame_idx: hit}
        features = original(self, inference_state, frame_idx, batch_size)
        if hit is None:
            cache[frame_idx] = inference_state["cached_features"][frame_idx]
            evictable = [f for f in cache if f not in pinned]
            for f in evictable[: max(0, len(evictable) - capacity)]:
                del cache[f]
        return features

    predictor._get_image_feature = types.MethodType(cached, predictor)


def _drop_old_outputs(state: dict, frame: int, reverse: bool, window: int, first: int) -> None:
    """Forget non-conditioning outputs SAM2 will not read again. Backward, frames more than
    `window` above the current one, except the `window` frames below the first keyframe that
    the forward pass reads when it starts; forward, frames more than `window` below."""
    if reverse:
        old = frame + window + 1
        if old >= first - window:
            return
    else:
        old = frame - window - 1
    for outputs in state["output_dict_per_obj"].values():
        outputs["non_cond_frame_outputs"].pop(old, None)


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


def _restore(predictor) -> None:
    for name in ("_get_image_feature", "_run_single_frame_inference", "_run_memory_encoder"):
        predictor.__dict__.pop(name, None)


def segment(
    predictor,
    frames: SAM2Frames,
    prompts: Sequence[BoxPrompt],
    *,
    feature_cache: int = 4,
    prune: bool = True,
) -> Iterator[tuple[int, dict[object, np.ndarray]]]:
    """Masks (native size, bool) of every prompted object on every frame, one frame at a time
    (frames before the first keyframe come first, in reverse order; then the rest, in order).

    `prune` drops SAM2's per-frame outputs once they fall out of the window its memory reads
    (the last num_maskmem frames and max_obj_ptrs_in_encoder object pointers), so that the
    state stays bounded on long videos; results are unchanged (tested)."""
    import torch

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
    tracked: dict[tuple, int] = {}
    for sig in signature.values():
        tracked.setdefault(sig, len(tracked) + 1)  # SAM2 object ids

    state = _init_state(predictor, frames)
    keyframes = {frame for sig in tracked for frame, _ in sig}
    _with_feature_cache(predictor, feature_cache, keyframes)
    window = max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder)
    on_cuda = predictor.device.type == "cuda"
    if not on_cuda:
        _float_memories(predictor)
    # on CUDA, bfloat16 autocast as in SAM2's own examples
    precision = (
        torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode(), precision, warnings.catch_warnings():
            # sam2 built without its CUDA extension (CPU machines) skips hole filling of small
            # mask holes (fill_hole_area=8) and says so on every frame; that is expected here
            warnings.filterwarnings("ignore", message="cannot import name '_C'")
            for sig, sam_id in tracked.items():
                for frame, box in sig:
                    predictor.add_new_points_or_box(
                        state, frame_idx=frame, obj_id=sam_id, box=np.array(box, np.float32)
                    )
            first = min(frame for sig in tracked for frame, _ in sig)
            passes = [(True, first), (False, first)]
            seen: set[int] = set()
            for reverse, start in passes:
                for frame_idx, obj_ids, logits in predictor.propagate_in_video(
                    state, start_frame_idx=start, reverse=reverse
                ):
                    if prune:
                        _drop_old_outputs(state, frame_idx, reverse, window, first)
                    if frame_idx in seen:
                        continue
                    seen.add(frame_idx)
                    masks = (logits[:, 0] > 0).cpu().numpy()
                    per_id = dict(zip(obj_ids, masks, strict=True))
                    yield frame_idx, {obj: per_id[tracked[sig]] for obj, sig in signature.items()}
    finally:
        _restore(predictor)
