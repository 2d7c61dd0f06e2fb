"""What a saved study stage depends on: `omnir1 study` reuses a stage only when nothing in its
fingerprint changed."""

from __future__ import annotations

from omnir1.config import load_params
from omnir1.rl.study import fingerprint
from omnir1.rl.train import data_digest


def test_fingerprint_follows_params_data_and_settings(tmp_path):
    data = tmp_path / "data"
    (data / "Videos").mkdir(parents=True)
    clip = data / "Videos" / "a.mp4"
    clip.write_bytes(b"12345")
    meta = data / "meta_expressions.json"
    meta.write_text('{"a": 1}')
    params = load_params("params.yaml")

    def key(p=params, **settings):
        return fingerprint(p, data_digest(data), **({"per_sample": 2} | settings))

    first = key()
    assert key(load_params("params.yaml")) == first
    assert key(per_sample=4) != first
    other = params.model_copy(deep=True)
    other.train.max_steps += 1
    assert key(other) != first

    clip.write_bytes(b"123456")  # a media file changed size
    assert key() != first
    clip.write_bytes(b"12345")
    assert key() == first
    meta.write_text('{"a": 2}')  # an annotation changed, same size: read in full
    assert key() != first
    meta.write_text('{"a": 1}')
    (data / "Videos" / "b.mp4").write_bytes(b"")  # a file added
    assert key() != first
