"""Interruptions: a write killed with SIGKILL inside `atomic_path` leaves no half-written target and the next run
cleans up; `patrol-deploy run` killed (SIGTERM, SIGKILL) inside its stages and re-run on the same folder ends with
intact artifacts and the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from patrol_deploy.config import Config
from patrol_deploy.errors import EXIT_TERMINATED
from patrol_deploy.runfolder import RunFolder, check_run_folder, remove_stale_temps, run_identity
from tests.hostile.conftest import INTERRUPTS
from tests.test_determinism import TOLERANCE, report_numbers

ROOT = Path(__file__).resolve().parents[2]

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


# --- `patrol-deploy run` killed inside its stages, then re-run on the same folder -----------------------------------

# (stage, what announces it: a checkpoint file written by this process, or a line on stderr, the longest delay after
# it in seconds). The kill lands at a random point within the delay, in that stage or a little later; on the toy
# config a stage takes 1-3 s on the 2-core CI machine.
KILL_POINTS = [
    ("baseline training", "train/checkpoints/baseline.pt", 0.2),
    ("PATROL mask training", "patrol/checkpoints/*/warmup.pt", 0.4),
    ("PATROL fine-tuning", "patrol/checkpoints/*/pruned.pt", 0.3),
    ("undefended variant's attacks", "variants/undefended/checkpoints/attacks/attack-whitebox.pt", 0.05),
    ("noise defense's fine-tuning", "defense noise", 0.3),
    ("export / quantize", "export:", 1.0),
]
RESUMED = ("resuming after", "reusing its finished result")  # what a stage says when it resumes mid-way


class Child:
    """`patrol-deploy run ...` in a subprocess, its stderr collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.started = time.time()
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "patrol-deploy"), *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            self.chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def announced(self, out: Path, sign: str) -> bool:
        """Whether `sign` (a line on stderr, or a file under `out` that this process wrote) has appeared."""
        if "/" not in sign:
            return sign in self.stderr
        return any(f.stat().st_mtime >= self.started for f in out.glob(sign))

    def wait_for(self, out: Path, sign: str, timeout: float = 300.0) -> bool:
        """True once `sign` appeared; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while not self.announced(out, sign):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return self.announced(out, sign)
            time.sleep(0.02)
        return True

    def finish(self, timeout: float = 300.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def resumed(self) -> int:
        return sum(self.stderr.count(r) for r in RESUMED)


def run_command(config: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_pipeline import TOY

    path = tmp_path_factory.mktemp("config") / "toy.yaml"
    path.write_text(yaml.safe_dump(TOY), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(toy_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The report numbers of one uninterrupted run of the toy pipeline (same CLI, seed and environment)."""
    out = tmp_path_factory.mktemp("reference")
    child = Child(run_command(toy_yaml, out, "--skip-deploy"))
    assert child.finish() == 0, child.stderr[-3000:]
    return report_numbers(json.loads((out / "report.json").read_text(encoding="utf-8")))


def corrupted_files(out: Path) -> list[str]:
    """Files the manifest records whose content no longer matches it (a half-written artifact)."""
    run = RunFolder(out)
    return [rel for stage in run.manifest()["stages"] for rel in run.changed_files(stage)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_numbers(toy_yaml: Path, uninterrupted: dict[str, float],
                                                         tmp_path: Path) -> None:
    """Six kills (SIGTERM and SIGKILL, seeded order and delays) in six stages of one run folder, each followed by
    a re-run; the last re-run finishes. Figures in docs/reliability.md."""
    rng = random.Random(8)
    signals = [signal.SIGTERM, signal.SIGKILL] * (len(KILL_POINTS) // 2)
    rng.shuffle(signals)
    out = tmp_path / "run"
    tried: list[str] = []  # "stage (signal" of each kill; the next run adds how it went on
    corrupted, temps_left = [], 0

    def went_on(child: Child) -> None:
        if tried and not tried[-1].endswith(")"):
            tried[-1] += ", resumed)" if child.resumed() else ", restarted)"

    for (stage, sign, longest), sig in zip(KILL_POINTS, signals, strict=True):
        child = Child(run_command(toy_yaml, out))
        announced = child.wait_for(out, sign)  # False: an earlier kill landed past this stage
        time.sleep(rng.uniform(0.0, longest))
        went_on(child)
        if not announced or child.proc.poll() is not None:  # nothing left to kill in this stage
            assert child.finish() in (0, 1), child.stderr[-3000:]
            continue
        child.proc.send_signal(sig)
        tried.append(f"{stage} ({sig.name}")
        code = child.finish()
        if sig == signal.SIGTERM:  # handled: one line, exit 143, and the write in progress was cleaned up
            assert code == EXIT_TERMINATED, child.stderr[-3000:]
            lines = child.stderr.strip().splitlines()
            assert lines[-2:] == ["patrol-deploy: terminated (SIGTERM)", "FAILED | patrol-deploy run"], lines[-5:]
            assert "Traceback" not in child.stderr
            assert not list(out.rglob("*.tmp"))
        else:
            assert code == -signal.SIGKILL
            temps_left += len(list(out.rglob("*.tmp")))  # possible; the next run deletes them
        corrupted += corrupted_files(out)
    final = Child(run_command(toy_yaml, out))
    code = final.finish()  # a finished run: 0, or 1 when the toy PATROL or its INT8 edge fails its verdict
    assert code == 0 or (code == 1 and "FAILED:" in final.stderr and "Traceback" not in final.stderr), \
        final.stderr[-3000:]
    went_on(final)

    assert len(tried) >= 4 and all(any(s in t for t in tried) for s in ("SIGTERM", "SIGKILL")), tried
    mid_stage = sum("resumed)" in t for t in tried)
    assert mid_stage >= 1, tried  # how many depends on where the delays land at this machine's speed
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("checkpoints"))
    corrupted += corrupted_files(out)
    assert not corrupted, corrupted
    stages = RunFolder(out).manifest()["stages"]
    assert {"train", "patrol", "variants/undefended", "variants/patrol", "variants/noise", "report", "export",
            "quantize", "verify"} <= set(stages)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert "quantized" in report
    got = report_numbers(report)
    assert got.keys() == uninterrupted.keys()
    differ = {k: (got[k], uninterrupted[k]) for k in got if not abs(got[k] - uninterrupted[k]) <= TOLERANCE}
    assert not differ, differ
    INTERRUPTS.update(kills=len(tried), where="; ".join(tried), mid_stage=mid_stage,
                      corrupted=len(corrupted), temps=temps_left, numbers=len(got), identical=len(got) - len(differ))
