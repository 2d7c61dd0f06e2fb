from pathlib import Path

import pytest

from omnir1.errors import DataError
from omnir1.fsutil import atomic_open, inside, read_json, write_json


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


@pytest.mark.parametrize(
    "parts", [("..", "etc"), ("a", "..", "..", "x"), ("/etc/passwd",), ("",), ("a\x00b",)]
)
def test_inside_refuses_escapes(tmp_path: Path, parts):
    with pytest.raises(DataError, match=r"escapes|invalid path component") as info:
        inside(tmp_path, *parts, source="meta.json", field="videos.x")
    assert "meta.json: videos.x:" in str(info.value)


def test_inside_accepts_nested_ids(tmp_path: Path):
    assert inside(tmp_path, "UVO", "all", "-fbscFfkh4M") == tmp_path / "UVO" / "all" / "-fbscFfkh4M"


def test_read_json_errors_name_file(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(DataError, match=r"bad.json: invalid JSON at line 1"):
        read_json(bad)
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_atomic_write_gets_the_usual_file_mode(tmp_path: Path):
    import os

    write_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
