"""Does System 1's visual token say what a frame shows? A linear probe (softmax regression on
standardised features) from each System-1 frame's token to the colour and shape of the object in
view (or none), trained on 4/5 of a synthetic ReVOS set's videos and scored on the other fifth,
against the same probe on the frame's raw pixels and the majority class.

    OMP_NUM_THREADS=2 python research/scripts/vision_probe.py --data DIR [--seed 0]
        [--frames images]

For the `turns` layout (at most one object in view), where the label of a frame is unambiguous.
Models are the embedded default's tiny ones (params.yaml), built under /tmp/system1_frames/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def frame_labels(samples, clips: dict, objects: dict) -> dict[tuple[str, int], tuple[str, str]]:
    """(video, System-1 frame) -> (colour, shape) of the object in view, from the samples' own
    masks (every expression's objects: together they cover each video's objects)."""
    labels = {}
    for sample in samples:
        if sample.mask_source is None or sample.is_null:
            continue
        height, width = sample.frame_size()
        for frame, source in enumerate(clips[sample.video_id].source_indices):
            masks = sample.mask_source.frame_masks(int(source), height, width)
            for obj, mask in zip(sample.object_ids, masks, strict=True):
                if mask.any():
                    info = objects[sample.video_id][obj]
                    labels[(sample.video_id, frame)] = (info["color"], info["shape"])
    return labels


def probe_accuracy(x: np.ndarray, y: list[str], train: np.ndarray, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised softmax regression fitted with L-BFGS."""
    import torch

    classes = sorted(set(y))
    target = torch.tensor([classes.index(v) for v in y])
    feats = torch.tensor(x, dtype=torch.float64)
    mean, std = feats[train].mean(0), feats[train].std(0) + 1e-6
    feats = (feats - mean) / std
    w = torch.zeros(feats.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    tr = torch.as_tensor(train)

    def closure():
        opt.zero_grad()
        logits = feats[tr] @ w + b
        loss = torch.nn.functional.cross_entropy(logits, target[tr]) + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        predicted = (feats[~tr] @ w + b).argmax(1)
    return float((predicted == target[~tr]).double().mean())


def main() -> None:
    import torch

    from omnir1.data.shards import clips_for
    from omnir1.data.synth.generate import OBJECTS_FILE
    from omnir1.experimental.params import load_study_params
    from omnir1.fsutil import read_json
    from omnir1.models.loading import load_models
    from omnir1.models.tiny import init_tiny
    from omnir1.rl.train import trainable_samples

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", choices=["video", "images"], default="images")
    a = ap.parse_args()
    data = Path(a.data)

    params = load_study_params("params.yaml")
    params.system1.frames = a.frames
    s1 = params.system1
    sizes = params.models.tiny.sizes()
    base = Path(f"/tmp/system1_frames/seed{a.seed}_h{sizes.hidden}_l{sizes.layers}")
    if not (base / "models.json").is_file():
        init_tiny(base, seed=a.seed, sizes=sizes)
    models = load_models(base, system2=False)

    samples = [s for split in ("train", "valid") for s in trainable_samples("revos", data, split)]
    first = {s.video_id: s for s in reversed(samples)}  # one sample per video: its frames
    clips = dict(zip(first, clips_for(list(first.values()), s1), strict=True))
    labels = frame_labels(samples, clips, read_json(data / OBJECTS_FILE))
    frames = {(vid, f): frame for vid, clip in clips.items() for f, frame in enumerate(clip.frames)}
    keys = list(frames)

    image_processor = models.system1_processor.image_processor
    tokens = []
    with torch.no_grad():
        for i in range(0, len(keys), 64):
            batch = image_processor(
                images=[frames[k] for k in keys[i : i + 64]], do_resize=False, return_tensors="pt"
            )
            out = models.system1.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
            out = out if torch.is_tensor(out) else out.pooler_output
            out = torch.cat(list(out)) if isinstance(out, (list, tuple)) else out
            tokens.append(out.float().reshape(len(keys[i : i + 64]), -1).numpy())
    features = {
        "visual token": np.concatenate(tokens),
        "raw pixels": np.stack([frames[k].reshape(-1) for k in keys]).astype(np.float32) / 255,
    }
    videos = sorted({k[0] for k in keys})
    held = set(videos[::5])
    train = np.array([k[0] not in held for k in keys])
    result = {"data": str(data), "frames": a.frames, "frames_scored": int((~train).sum())}
    for name, pick in (("colour", 0), ("shape", 1), ("object in view", None)):
        y = [
            ("none" if k not in labels else labels[k][pick] if pick is not None else "object")
            for k in keys
        ]
        test = [v for v, t in zip(y, train, strict=True) if not t]
        result[name] = {
            "majority": round(max(test.count(c) for c in set(test)) / len(test), 3),
            **{f: round(probe_accuracy(x, y, train), 3) for f, x in features.items()},
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
