"""System 2, second half: SAM2.1 turns keyframe boxes into masks on every frame of the video.

Frames reach SAM2 through `SAM2Frames`: the video is decoded once, streamed, each frame resized
to SAM2's square input and kept in a uint8 memory-mapped file, and normalised only when SAM2
asks for it; memory stays bounded whatever the video's length (SAM2's own per-frame state still
grows with the frames it tracks).

`segment` takes box prompts of many objects at once (for GRPO: every object of every completion
of a group). Each object is tracked from its own first prompt, backward to frame 0 and then
forward to the last frame, so its masks never depend on the other objects; objects with
identical prompts are tracked once, objects prompted on the same frames run as one SAM2 batch,
and all of them advance in lockstep so that each frame's image features are computed once per
sweep and shared.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import tempfile
import types
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


class _FeatureCache:
    """Backbone features shared by every inference state of one `segment` call. SAM2 keeps
    only the latest frame's, per state: without this each state would compute every frame
    again. Kept: the frame being computed now (the states step through it one after another),
    prompted frames (read again when the states start), and `keep` frames the forward sweep
    will read after the backward sweep, until that sweep has passed them."""

    def __init__(self, pinned: set[int], keep: set[int]):
        self.pinned, self.keep = pinned, keep
        self.store: dict[int, object] = {}
        self.current: int | None = None

    def bind(self, predictor) -> None:
        original = type(predictor)._get_image_feature
        cache = self

        def cached(self, inference_state, frame_idx, batch_size):
            hit = cache.store.get(frame_idx)
            if hit is not None:
                inference_state["cached_features"] = {frame_idx: hit}
            features = original(self, inference_state, frame_idx, batch_size)
            if hit is None:
                cache.store[frame_idx] = inference_state["cached_features"][frame_idx]
            if cache.current != frame_idx:
                cache.release(cache.current)
                cache.current = frame_idx
            return features

        predictor._get_image_feature = types.MethodType(cached, predictor)

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
    state stays bounded on long videos; results are unchanged (tested)."""
    import torch

    if predictor.non_overlap_masks or predictor.non_overlap_masks_for_mem_enc:
        raise ValueError("SAM2 with non-overlapping masks couples objects: not supported")
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
    cache = _FeatureCache(set(keyframes), set(between[:feature_cache]))
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
