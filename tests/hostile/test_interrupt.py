"""A write killed with SIGKILL inside `atomic_path` leaves no half-written target, and the next run cleans up."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from patrol_deploy.config import Config
from patrol_deploy.runfolder import RunFolder, check_run_folder, remove_stale_temps, run_identity

CHUNK, CHUNKS = 64 * 1024, 400
WRITER = textwrap.dedent(f"""
    import sys, time
    from patrol_deploy.runfolder import atomic_path
    with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as fh:
        for i in range({CHUNKS}):
            fh.write(bytes([i % 256]) * {CHUNK})
            fh.flush()
            if i == 3:
                print("writing", flush=True)
            time.sleep(0.01)
""")


def test_sigkill_mid_write_leaves_no_partial_target(tmp_path: Path) -> None:
    root = tmp_path / "run"
    target = root / "train" / "model.pt"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not target.exists() or target.stat().st_size == CHUNK * CHUNKS
    stale = list(target.parent.glob(".model.pt.*.tmp"))
    assert len(stale) == 1 and 0 < stale[0].stat().st_size < CHUNK * CHUNKS

    cfg = Config.model_validate({"data": {"source": "digits", "image_size": 16}, "model": {"width": 4}})
    (root / "train" / ".keep").write_text("a dot-file that is no temp file", encoding="utf-8")
    check_run_folder(RunFolder(root), run_identity(cfg))  # the next run claims the folder
    assert not list(root.rglob("*.tmp")) and (root / "train" / ".keep").exists()
    assert RunFolder(root).manifest()["stages"] == {}


def test_remove_stale_temps_keeps_other_files_and_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".x.abc.tmp").write_text("not ours", encoding="utf-8")
    root = tmp_path / "run"
    (root / "a").mkdir(parents=True)
    for name in (".report.json.k2j.tmp", "report.json", "notes.tmp", ".hidden"):
        (root / "a" / name).write_text(name, encoding="utf-8")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    removed = remove_stale_temps(root)
    assert [p.name for p in removed] == [".report.json.k2j.tmp"]
    assert sorted(p.name for p in (root / "a").iterdir()) == [".hidden", "notes.tmp", "report.json"]
    assert (outside / ".x.abc.tmp").exists()
