"""The registered model as MLflow serves it: both systems behind `mlflow.pyfunc`.

`omnir1 register` saves this file as an MLflow "model from code" with the model folder as its
artifact `models` (omnir1.registry.save_pyfunc): loading runs this file, so nothing is
pickled. Then

    mlflow.pyfunc.load_model("models:/omnir1-system1@champion").predict(frame)
    mlflow models serve -m models:/omnir1-system1@champion --env-manager local

take rows of `video` (a path the loading process can read: a file, or a frame folder with
`fps`), `expression`, and optional `seed`, and give per row System 1's completion, the parsed
answer and keyframes (JSON) and the mask of every frame as COCO RLE (JSON), as `omnir1 infer`
does. `OMNIR1_DEVICE` picks the torch device (default cpu).
"""

from __future__ import annotations

import json
import os

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

INPUTS = ("video", "expression")  # required columns; `fps` and `seed` are optional
OUTPUTS = ("completion", "answer", "keyframes", "masks")


class OmniR1Model(PythonModel):
    def load_context(self, context) -> None:
        from omnir1.models.loading import load_models

        device = os.environ.get("OMNIR1_DEVICE", "cpu")
        self.models = load_models(context.artifacts["models"], device=device)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from dataclasses import asdict

        from omnir1.data import rle
        from omnir1.systems.collaboration import run_collaboration

        rows = model_input.to_dict("records")
        out = []
        for row in rows:
            masks: dict[int, dict] = {}

            def keep(frame, mask, masks=masks):
                masks[frame] = rle.encode(mask)

            fps, seed = _given(row.get("fps")), _given(row.get("seed"))
            result = run_collaboration(
                self.models,
                row["video"],
                row["expression"],
                seed=0 if seed is None else int(seed),
                on_masks=keep,
                folder_fps=1.0 if fps is None else float(fps),
            )
            out.append(
                {
                    "completion": result.completion,
                    "answer": json.dumps(result.answer),
                    "keyframes": json.dumps([asdict(k) for k in result.keyframes]),
                    "masks": json.dumps([masks[t] for t in sorted(masks)]),
                }
            )
        return pd.DataFrame(out, columns=list(OUTPUTS))


def _given(value):
    """An optional column's value, or None where the row leaves it out (pandas gives NaN)."""
    import math

    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


set_model(OmniR1Model())
