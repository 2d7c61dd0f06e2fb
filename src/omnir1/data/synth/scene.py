"""Scenes: shapes on a background, their motion, visibility masks and soundtrack."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# shape -> (sound name used in expressions, verb phrase)
SOUNDS = {
    "circle": "high whistle",
    "square": "drum beat",
    "triangle": "low hum",
    "diamond": "bell ring",
    "star": "buzzing",
}
SEEN_SHAPES = ("circle", "square", "triangle")
UNSEEN_SHAPES = ("diamond", "star")  # only in RefAVS test_u / held-out videos
COLORS = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 205, 35),
    "purple": (145, 55, 190),
    "orange": (245, 135, 25),
}
SIZES = {"small": 0.08, "large": 0.15}  # radius as a fraction of the frame's shorter side


@dataclass
class SceneObject:
    obj_id: int
    shape: str
    color: str
    size: str
    z: int  # drawing order: higher is in front
    t_in: float  # the object exists from t_in to t_out (seconds)
    t_out: float
    start: tuple[float, float]  # centre (x, y) in pixels at t_in
    end: tuple[float, float]  # centre at t_out
    sound_intervals: list[tuple[float, float]] = field(default_factory=list)

    def centre(self, t: float) -> tuple[float, float]:
        a = 0.0 if self.t_out <= self.t_in else (t - self.t_in) / (self.t_out - self.t_in)
        return (
            self.start[0] + a * (self.end[0] - self.start[0]),
            self.start[1] + a * (self.end[1] - self.start[1]),
        )

    def exists(self, t: float) -> bool:
        return self.t_in <= t <= self.t_out

    def describe(self, *, with_size: bool = False) -> str:
        return (
            f"{self.size} {self.color} {self.shape}" if with_size else f"{self.color} {self.shape}"
        )


@dataclass
class Scene:
    width: int
    height: int
    fps: float
    duration_s: float
    objects: list[SceneObject]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom colours
    # "gradient": top to bottom colour; "position": a smooth position code, red ramping with x
    # and green with y from `background`'s first colour (top left) to its second (bottom right),
    # blue from top to bottom, so the pixels around an object tell where in the frame it is
    background_style: str = "gradient"
    object_scale: float = 1.0  # radii are SIZES x this x the shorter side

    @property
    def num_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def frame_time(self, i: int) -> float:
        return i / self.fps

    def radius(self, obj: SceneObject) -> float:
        return SIZES[obj.size] * self.object_scale * min(self.width, self.height)


def _shape_mask(
    shape: str, cx: float, cy: float, r: float, xx: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = 0.85 * r
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "triangle":  # apex up; inside three half-planes
        k = math.tan(math.radians(30))
        return (dy <= 0.5 * r) & (np.abs(dx) <= (dy + r) * k)
    if shape == "star":
        rr = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx) + math.pi / 2
        return rr <= r * (0.62 + 0.38 * np.cos(5 * theta))
    raise ValueError(f"unknown shape {shape!r}")


# "position": red ramps with x, green with y (where a pixel is, in its colour); "timecode":
# the same, with blue saying when (it rises from TIMECODE_BLUE[0] to [1] over the clip), so a
# frame's pixels carry its time as well as their place
BACKGROUND_STYLES = ("gradient", "position", "timecode")
TIMECODE_BLUE = (40.0, 230.0)


def background(scene: Scene) -> np.ndarray:
    """The scene's background, (H, W, 3) float32."""
    h, w = scene.height, scene.width
    first, second = (np.asarray(c, np.float32) for c in scene.background)
    down = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    if scene.background_style == "gradient":
        return np.broadcast_to((first * (1 - down) + second * down)[:, None, :], (h, w, 3))
    if scene.background_style in ("position", "timecode"):
        across = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        code = np.empty((h, w, 3), np.float32)
        code[..., 0] = first[0] + (second[0] - first[0]) * across
        code[..., 1] = first[1] + (second[1] - first[1]) * down
        code[..., 2] = first[2] + (second[2] - first[2]) * down
        return code
    raise ValueError(f"unknown background style {scene.background_style!r}")


def render(scene: Scene) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frames (T, H, W, 3) uint8 and, per object id, its visible masks (T, H, W) bool.

    A mask holds only the pixels of the object that can be seen: parts covered by objects in
    front of it, and parts outside the frame, are not in it (as in VOS annotations).
    """
    h, w, n = scene.height, scene.width, scene.num_frames
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = background(scene)
    frames = np.empty((n, h, w, 3), np.uint8)
    masks = {o.obj_id: np.zeros((n, h, w), bool) for o in scene.objects}
    for i in range(n):
        frames[i], drawn = _draw(scene, scene.frame_time(i), base, xx, yy)
        for obj_id, m in drawn.items():
            masks[obj_id][i] = m
    return frames, masks


def render_frame(scene: Scene, t: float) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The frame (H, W, 3) uint8 at time t and the visible mask (H, W) of every object drawn."""
    yy, xx = np.mgrid[0 : scene.height, 0 : scene.width].astype(np.float32)
    return _draw(scene, t, background(scene), xx, yy)


def _draw(scene: Scene, t: float, base: np.ndarray, xx: np.ndarray, yy: np.ndarray):
    img = base.copy()
    if scene.background_style == "timecode":
        low, high = TIMECODE_BLUE
        img[..., 2] = low + (high - low) * min(1.0, t / scene.duration_s)
    masks: dict[int, np.ndarray] = {}
    for obj in sorted(scene.objects, key=lambda o: o.z):
        if not obj.exists(t):
            continue
        cx, cy = obj.centre(t)
        m = _shape_mask(obj.shape, cx, cy, scene.radius(obj), xx, yy)
        for other in masks.values():  # whatever is drawn now hides what was drawn before
            other &= ~m
        masks[obj.obj_id] = m
        img[m] = COLORS[obj.color]
    return img.astype(np.uint8), masks


def first_last_visible(mask: np.ndarray, fps: float) -> tuple[float | None, float | None]:
    """Times of the first and last frame in which a (T, H, W) mask is non-empty."""
    visible = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if visible.size == 0:
        return None, None
    return visible[0] / fps, visible[-1] / fps


# --------------------------------------------------------------------------------- audio


def _envelope(n: int, sr: int, fade_s: float = 0.01) -> np.ndarray:
    env = np.ones(n, np.float32)
    k = min(n // 2, int(fade_s * sr))
    if k:
        ramp = np.linspace(0, 1, k, dtype=np.float32)
        env[:k], env[-k:] = ramp, ramp[::-1]
    return env


def sound(shape: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of the sound of a shape class."""
    t = np.arange(n, dtype=np.float32) / sr
    if shape == "circle":  # high whistle with a little vibrato
        y = 0.35 * np.sin(2 * np.pi * (2000 * t + 15 * np.sin(2 * np.pi * 5 * t)))
    elif shape == "square":  # drum hits every 0.5 s
        phase = np.mod(t, 0.5)
        decay = np.exp(-phase / 0.12)
        y = (
            0.8
            * decay
            * (np.sin(2 * np.pi * 70 * phase) + 0.15 * rng.standard_normal(n).astype(np.float32))
        )
    elif shape == "triangle":  # low hum with harmonics
        y = 0.3 * (
            np.sin(2 * np.pi * 180 * t)
            + 0.5 * np.sin(2 * np.pi * 360 * t)
            + 0.25 * np.sin(2 * np.pi * 540 * t)
        )
    elif shape == "diamond":  # bell struck every second
        phase = np.mod(t, 1.0)
        y = (
            0.5
            * np.exp(-phase / 0.3)
            * (np.sin(2 * np.pi * 1200 * t) + 0.4 * np.sin(2 * np.pi * 3312 * t))
        )
    elif shape == "star":  # buzz
        y = 0.15 * np.sign(np.sin(2 * np.pi * 440 * t))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return (y * _envelope(n, sr)).astype(np.float32)


# Frequency band (Hz) holding most of each sound's energy: used to check the soundtrack.
SOUND_BANDS = {
    "circle": (1900, 2100),
    "square": (50, 90),
    "triangle": (170, 190),
    "diamond": (1150, 1250),
    "star": (430, 450),
}


def soundtrack(scene: Scene, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 audio of the scene: each object sounds in its sound intervals."""
    n = round(scene.duration_s * sr)
    audio = 0.002 * rng.standard_normal(n).astype(np.float32)  # faint noise floor
    for obj in scene.objects:
        for start, end in obj.sound_intervals:
            a, b = round(start * sr), min(n, round(end * sr))
            if b > a:
                audio[a:b] += sound(obj.shape, b - a, sr, rng)
    peak = float(np.abs(audio).max())
    return audio * (0.9 / peak) if peak > 0.9 else audio
