"""System 2, first half: the grounder turns (keyframe, description) into boxes.

The grounder is a frozen copy of the base model (docs/design.md §2). It sees the keyframe at high
resolution (up to 900 x 28 x 28 pixels, resized to multiples of 28 with the Qwen rule) and
answers `[{"bbox_2d": [x1, y1, x2, y2], ...}]` in the pixels of the image it saw; boxes are
scaled back to the frame's native pixels. Answers are parsed by the total `parse_boxes`: a
malformed answer yields no boxes and its reasons, never an exception.

Requests are deduplicated on (frame key, description) and the unique ones run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnir1.config import GrounderParams
from omnir1.media.video import smart_resize
from omnir1.systems.parsing import parse_boxes
from omnir1.systems.prompts import grounder_task, marker_token_ids


@dataclass(frozen=True)
class GroundingRequest:
    key: object  # identifies the frame (e.g. its index in the video); equal keys = same image
    image: np.ndarray = field(compare=False, repr=False)  # (H, W, 3) uint8, native size
    description: str = ""


@dataclass
class GroundingResult:
    boxes: list[list[float]]  # [x0, y0, x1, y1] in the frame's native pixels
    text: str
    parse: dict  # ParsedBoxes.to_dict(): problems, dropped boxes, ...


class Grounder:
    def __init__(self, model, processor, cfg: GrounderParams | None = None):
        self.model = model
        self.processor = processor
        self.cfg = cfg or GrounderParams()
        self.suppress_tokens = marker_token_ids(processor.tokenizer)

    def _prompt(self, description: str) -> str:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": grounder_task(description)},
                ],
            }
        ]
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def _shown_size(self, image: np.ndarray) -> tuple[int, int]:
        h, w = image.shape[:2]
        return smart_resize(h, w, min_pixels=self.cfg.min_pixels, max_pixels=self.cfg.max_pixels)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        rh, rw = self._shown_size(image)
        if (rh, rw) == image.shape[:2]:
            return image
        return np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.BICUBIC))

    def _generate(self, batch: list[GroundingRequest]) -> list[str]:
        import torch

        # writable copies: torch warns on (and must not share) read-only numpy buffers
        images = [np.array(self._resized(r.image)) for r in batch]
        texts = [self._prompt(r.description) for r in batch]
        inputs = self.processor(
            text=texts,
            images=images,
            images_kwargs={"do_resize": False},
            return_tensors="pt",
            padding=True,
            padding_side="left",  # decoder-only batch generation continues from the right
        ).to(self.model.device)
        with torch.no_grad():
            pixels, grid = inputs.pop("pixel_values"), inputs["image_grid_thw"]
            out = self.model.generate(
                **inputs,
                mm_encoder_outputs={"image": self._encode_images(batch, pixels, grid)},
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=False,
                suppress_tokens=self.suppress_tokens,
            )
        return self.processor.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )

    def _encode_images(self, batch: list[GroundingRequest], pixels, grid):
        """The vision tower's output for every request of `batch`, each distinct frame encoded
        once: a GRPO group asks about the same keyframe with several descriptions, and the
        image is the same for all of them (transformers takes pre-encoded images as
        `mm_encoder_outputs`)."""
        import itertools

        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        patches = grid.prod(-1).tolist()  # rows of `pixels` per image, in batch order
        starts = [0, *itertools.accumulate(patches)][:-1]
        first: dict[object, int] = {}
        for i, r in enumerate(batch):
            first.setdefault(r.key, i)
        distinct = list(first.values())
        encoded = self.model.get_image_features(
            torch.cat([pixels[starts[i] : starts[i] + patches[i]] for i in distinct]),
            grid[distinct],
            return_dict=True,
        ).pooler_output
        slot = {i: n for n, i in enumerate(distinct)}
        return BaseModelOutputWithPooling(
            pooler_output=tuple(encoded[slot[first[r.key]]] for r in batch)
        )

    def ground(self, requests: list[GroundingRequest]) -> list[GroundingResult]:
        """One result per request, in order; identical requests are answered once."""
        unique: dict[tuple, GroundingRequest] = {}
        for r in requests:
            unique.setdefault((r.key, r.description), r)
        todo = list(unique.values())
        answers: dict[tuple, GroundingResult] = {}
        for start in range(0, len(todo), self.cfg.batch_size):
            batch = todo[start : start + self.cfg.batch_size]
            for r, text in zip(batch, self._generate(batch), strict=True):
                answers[(r.key, r.description)] = self.result(r, text)
        return [answers[(r.key, r.description)] for r in requests]

    def result(self, request: GroundingRequest, text: str) -> GroundingResult:
        """Parse the grounder's `text` for `request`, boxes scaled to native pixels."""
        h, w = request.image.shape[:2]
        shown_h, shown_w = self._shown_size(request.image)
        parsed = parse_boxes(text, shown_w, shown_h, max_boxes=self.cfg.max_boxes)
        sx, sy = w / shown_w, h / shown_h
        boxes = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in parsed.boxes]
        return GroundingResult(boxes=boxes, text=text, parse=parsed.to_dict())
