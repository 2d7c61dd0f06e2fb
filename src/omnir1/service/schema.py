"""Request and response bodies of the System-2 service (shared by server and client)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from omnir1.systems.system2 import KeyframeRequest, System2Request

MAX_KEYFRAMES = 16
MAX_BOXES = 16
MAX_REQUESTS = 64
MAX_BATCH = 16


class KeyframeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frame: int = Field(ge=0)
    description: str = Field(min_length=1, max_length=500)
    boxes: list[list[float]] | None = Field(default=None, max_length=MAX_BOXES)

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, boxes):
        for box in boxes or []:
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError("each box is [x0, y0, x1, y1] of finite numbers")
        return boxes


class RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    keyframes: list[KeyframeIn] = Field(max_length=MAX_KEYFRAMES)

    def to_request(self) -> System2Request:
        return System2Request(
            self.id,
            tuple(
                KeyframeRequest(
                    k.frame,
                    k.description,
                    None if k.boxes is None else tuple(tuple(b) for b in k.boxes),
                )
                for k in self.keyframes
            ),
        )


class SegmentIn(BaseModel):
    """One video and the requests to run on it together (e.g. all completions of a group).

    `video` is a path relative to the service's data root; or `video_b64` carries the file
    itself (with `video_suffix`), for clients that do not share storage with the service."""

    model_config = ConfigDict(extra="forbid")

    video: str | None = Field(default=None, max_length=1024)
    video_b64: str | None = None
    video_suffix: str = Field(default=".mp4", pattern=r"^\.(mp4|mkv|webm|mov|avi)$")
    fps: float = Field(default=1.0, gt=0, le=240, description="frame rate of a frame folder")
    requests: list[RequestIn] = Field(min_length=1, max_length=MAX_REQUESTS)


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[SegmentIn] = Field(min_length=1, max_length=MAX_BATCH)
