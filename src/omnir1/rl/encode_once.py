"""Each prompt's video, images and audio through their encoders once per forward, however many
rows of the batch carry them.

GRPO repeats every prompt for its G completions: generation's prefill and every log-prob
forward (policy, old policy, reference) hand the thinker G identical copies of the prompt's
video and audio, and the stock forward runs the vision tower and the audio encoder on each
copy. `encode_each_input_once(thinker)` wraps the thinker's `get_video_features`,
`get_image_features` and `get_audio_features` (Qwen2.5-Omni's own hooks, which its forward
calls) so that identical inputs within one call are encoded once and their outputs handed to
every row that carries them. Identity is by content (`torch.equal` on the input tensors, grid
and mask included), so nothing about the batch's layout is assumed and distinct prompts are
never merged; the comparison costs a read of the inputs, a small fraction of an encoder pass.
The towers see fewer rows in their matrix products, which may round differently in the last
bit than the stacked copies did (docs/training.md); the tests bound the difference.
"""

from __future__ import annotations

import functools

import torch

WRAPPED = "_omnir1_encode_once"


def _first_equal(items: list[tuple[torch.Tensor, ...]]) -> tuple[list[int], list[int]]:
    """(indices of the distinct items in order, for each item the position of its distinct
    one), items compared with torch.equal part by part."""
    distinct: list[int] = []
    where: list[int] = []
    for i, item in enumerate(items):
        for k, j in enumerate(distinct):
            other = items[j]
            if all(
                a.shape == b.shape and torch.equal(a, b) for a, b in zip(item, other, strict=True)
            ):
                where.append(k)
                break
        else:
            where.append(len(distinct))
            distinct.append(i)
    return distinct, where


def _distinct_visual(original, pixel_values, grid_thw, kwargs):
    """`original` (get_video_features / get_image_features) over the distinct (pixels, grid)
    pairs only, its per-input outputs handed back in the inputs' order."""
    if grid_thw is None or grid_thw.size(0) < 2:
        return original(pixel_values, grid_thw, **kwargs)
    pieces = pixel_values.split(grid_thw.prod(-1).tolist())
    distinct, where = _first_equal([(p, g) for p, g in zip(pieces, grid_thw, strict=True)])
    if len(distinct) == len(pieces):
        return original(pixel_values, grid_thw, **kwargs)
    out = original(torch.cat([pieces[i] for i in distinct]), grid_thw[distinct], **kwargs)
    out.pooler_output = tuple(out.pooler_output[k] for k in where)
    # the per-patch states are the distinct inputs' only: nothing in the forward reads them
    return out


# generation picks an encoder's arguments by the names in its signature (GenerationMixin
# encodes images and videos before the prefill): the wrappers keep the originals' names


def _video(original):
    @functools.wraps(original)
    def get_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
        return _distinct_visual(original, pixel_values_videos, video_grid_thw, kwargs)

    return get_video_features


def _image(original):
    @functools.wraps(original)
    def get_image_features(pixel_values, image_grid_thw=None, **kwargs):
        return _distinct_visual(original, pixel_values, image_grid_thw, kwargs)

    return get_image_features


def _audio(original, output_lengths):
    """get_audio_features over the distinct (features, mask) pairs only."""

    @functools.wraps(original)
    def get_audio_features(
        input_features, feature_attention_mask=None, audio_feature_lengths=None, **kw
    ):
        if feature_attention_mask is None or input_features.size(0) < 2:
            return original(input_features, feature_attention_mask, audio_feature_lengths, **kw)
        items = list(zip(input_features, feature_attention_mask, strict=True))
        distinct, where = _first_equal(items)
        if len(distinct) == len(items):
            return original(input_features, feature_attention_mask, audio_feature_lengths, **kw)
        mask = feature_attention_mask[distinct]
        out = original(input_features[distinct], mask, audio_feature_lengths, **kw)
        sizes = output_lengths(mask.sum(-1))[1].tolist()
        parts = out.last_hidden_state.split(sizes)
        out.last_hidden_state = torch.cat([parts[k] for k in where])
        return out

    return get_audio_features


def encode_each_input_once(thinker) -> None:
    """Wrap `thinker`'s (a Qwen2.5-Omni thinker) encoder hooks in place; idempotent."""
    inner = thinker.model
    if getattr(inner, WRAPPED, False):
        return
    inner.get_video_features = _video(inner.get_video_features)
    inner.get_image_features = _image(inner.get_image_features)
    lengths = inner.audio_tower._get_feat_extract_output_lengths
    inner.get_audio_features = _audio(inner.get_audio_features, lengths)
    setattr(inner, WRAPPED, True)
