"""What a saved study stage depends on: `omnir1 study` reuses a stage only when nothing in its
fingerprint changed."""

from __future__ import annotations

import os

from omnir1.config import load_params
from omnir1.rl.study import fingerprint


def test_fingerprint_follows_params_data_and_settings(tmp_path):
    data = tmp_path / "data"
    (data / "Videos").mkdir(parents=True)
    clip = data / "Videos" / "a.mp4"
    clip.write_bytes(b"12345")
    params = load_params("params.yaml")
    key = fingerprint(params, data, per_sample=2)
    assert fingerprint(load_params("params.yaml"), data, per_sample=2) == key

    assert fingerprint(params, data, per_sample=4) != key
    other = params.model_copy(deep=True)
    other.train.max_steps += 1
    assert fingerprint(other, data, per_sample=2) != key

    clip.write_bytes(b"123456")  # a data file changed
    assert fingerprint(params, data, per_sample=2) != key
    clip.write_bytes(b"12345")
    os.utime(clip, ns=(0, 0))  # the same bytes, written again: not assumed to be the same data
    assert fingerprint(params, data, per_sample=2) != key
    settled = fingerprint(params, data, per_sample=2)
    (data / "Videos" / "b.mp4").write_bytes(b"")  # a file added
    assert fingerprint(params, data, per_sample=2) != settled
