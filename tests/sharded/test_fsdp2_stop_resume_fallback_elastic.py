"""FSDP2 (fully_shard, gloo on CPU) under torchrun through the Checkpointer: every rank writes
its own shards, each checksummed under one manifest; SIGTERM on one rank stops all at one
step; resume on the same world size is bitwise exact; a flipped byte in one rank's shard makes
every rank fall back to the same older checkpoint; resume on 2 of 4 ranks reshards exactly,
re-shards the epoch's rest and records an ``elastic`` event; ``elastic=False`` refuses it; a
rank killed in the middle of a sharded save leaves the previous checkpoint the newest valid.

Three torchrun launches in all, their scenarios chained in the child
(tests/support/sharded_train.py); the tests read what they printed and left in the stores.
Each launch goes through torchrun's own parsing, elastic agent and rendezvous with its ranks
forked from one process (``--start-method fork``): a fresh interpreter per rank would cost
~6 s of CPU in imports (torch, DTensor, DCP) each: over half of this module's CPU time.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from spotsafe.checkpoint import Status
from spotsafe.checkpoint.sharded import sharded_info
from spotsafe.checkpoint.view import StoreView
from spotsafe.events import read_events
from spotsafe.storage import open_store
from tests.support.s3server import S3Server

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def torchrun(ranks: int, out: Path, *actions: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SPOTSAFE_CLOUD="none", OMP_NUM_THREADS="1",
               SPOTSAFE_ALLOW_EPHEMERAL="1")  # fmt: skip
    for key in ("SPOTSAFE_STORE", "SPOTSAFE_JOB_ID", "SPOTSAFE_ATTEMPT", "SPOTSAFE_POOL"):
        env.pop(key, None)
    # torchrun's own parsing, agent and rendezvous, its ranks forked from one process that
    # imported torch once (tests/support/sharded_train.launch): a fresh interpreter per rank
    # costs ~6 s of CPU in imports alone.
    return subprocess.run(
        [sys.executable, "-m", "tests.support.sharded_train", "--launch", str(ranks), str(out),
         *actions],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip


def lines(run: subprocess.CompletedProcess[str], kind: str) -> list[list[str]]:
    """The ``kind`` records the ranks printed: ``kind`` then words that are numbers or
    16-digit digests. Ranks share one pipe, so a line may hold several ranks' records."""
    # A class name ends at a space or where the next rank's record begins.
    word = rf" (?:[0-9a-f]{{16}}|\d+(?!\d)|[A-Z][A-Za-z]+?(?=\s|$|{re.escape(kind)}))"
    found = re.findall(rf"{kind}((?:{word})+)", run.stdout)
    return [[*kind.split(), *f.split()] for f in found]


def newest(store: Path, status: Status = Status.VALID) -> Any:
    return next(c for c in StoreView(str(store)).checkpoints() if c.status is status)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sharded")
    s3_url = f"s3://{s3_server.create_bucket()}/run"
    # A: an uninterrupted reference, then a run whose rank 1 is signalled after step 7.
    a = torchrun(4, out, f"train:{out / 'ref'}", f"train:{out / 'run'}:stop=7")
    assert "final ref" in a.stdout, a.stderr[-4000:]
    stopped_at = newest(out / "run").step
    fb, el = out / "fallback", out / "elastic"
    shutil.copytree(out / "run", fb)
    shutil.copytree(out / "run", el)
    (shard,) = (fb / newest(fb).path).glob("__2_*.distcp")
    flip_byte(shard)  # only rank 2 reads its own shard on a same-size restore
    # B: the fallback past the flipped byte; then the interrupted run resumed on 4 ranks.
    b = torchrun(4, out, f"fallback:{fb}", f"train:{out / 'run'}:tag=resumed")
    assert b.returncode == 0, b.stderr[-4000:]
    # C: 2 of the 4 ranks: strict refuses; elastic resumes (its shards over
    # host_buffer_bytes: saved synchronously); saves to S3 and restores from it; then a
    # rank dies mid-save.
    c = torchrun(2, out, f"strict:{el}", f"train:{el}:tag=el:hostbuf=0", f"s3:{s3_url}",
                 f"killsave:{el}")  # fmt: skip
    return {"out": out, "a": a, "b": b, "c": c, "fb": fb, "el": el, "stopped_at": stopped_at,
            "s3": s3_url}  # fmt: skip


def test_sigterm_on_one_rank_stops_all_at_one_step_with_75(runs: dict[str, Any]) -> None:
    a, store = runs["a"], runs["out"] / "run"
    assert a.returncode != 0  # torchrun reports its workers' 75 as a failure
    # torchrun names the first worker to exit (75) and ends the rest; the store has each
    # rank's own record of its clean stop.
    assert re.search(r"exitcode\s*: 75", a.stderr), a.stderr[-3000:]
    stops = [e for e in read_events(open_store(str(store))) if e.kind == "stop"]
    assert len(stops) == 4 and {e.get("clean") for e in stops} == {True}
    (step,) = {e.get("step") for e in stops}
    assert runs["stopped_at"] == step == 8  # the newest checkpoint was the stop step's


def test_each_rank_writes_its_shards_every_file_checksummed(runs: dict[str, Any]) -> None:
    store = runs["out"] / "run"
    c = newest(store)
    info = sharded_info(c.manifest)
    assert info is not None and info.world_size == 4 and sorted(info.shards) == [0, 1, 2, 3]
    assert set(info.objects) == {"model", "optimizer"}
    names = {f.rsplit("/", 1)[-1] for f in c.manifest.files if f.startswith(c.path + "/")}
    assert ".metadata" in names and {f"__{r}_0.distcp" for r in range(4)} <= names
    hashed = {e.file for e in c.manifest.tensors}
    assert set(c.manifest.files) <= hashed  # every file, DCP's included, has a digest
    assert all(v.status is Status.VALID for v in StoreView(str(store)).verify())
    # A new directory per checkpoint: each save wrote its own.
    assert len({v.path for v in StoreView(str(store)).checkpoints()}) >= 3


def test_resume_on_the_same_world_size_is_bitwise_exact(runs: dict[str, Any]) -> None:
    ref = {r[2]: r[3:] for r in lines(runs["a"], "final ref")}
    resumed = {r[2]: r[3:] for r in lines(runs["b"], "final resumed")}
    assert len(ref) == 4 and resumed == ref


def test_periodic_saves_write_in_the_background_what_was_snapshot(runs: dict[str, Any]) -> None:
    # Each rank wrote its shards of the saves at steps 2, 4 and 6 off the training thread
    # (the Guard's async saves), and of the stop's save at step 8 on it.
    writes = {(r[2], r[3]): r[4] for r in lines(runs["a"], "wrote run")}
    assert writes == {
        (str(k), str(s)): "1" if s < 8 else "0" for k in range(4) for s in (2, 4, 6, 8)
    }
    # Step 6's checkpoint, written while training went on to steps 7 and 8 (each write
    # waited 0.3 s), holds the state of step 6: the fallback loads exactly that.
    at6 = {r[2]: r[4] for r in lines(runs["a"], "at run")}
    fell_back_to = {f[1]: f[4] for f in lines(runs["b"], "fallback")}
    assert len(at6) == 4 and len(set(at6.values())) == 1 and fell_back_to == at6


def test_shards_over_host_buffer_bytes_are_saved_on_the_training_thread(
    runs: dict[str, Any],
) -> None:
    writes = lines(runs["c"], "wrote el")  # Checkpointer(host_buffer_bytes=0)
    assert len(writes) >= 4 and {w[4] for w in writes} == {"0"}


def test_a_flipped_byte_in_one_shard_sends_every_rank_back(runs: dict[str, Any]) -> None:
    fallbacks = lines(runs["b"], "fallback")
    assert sorted(f[1] for f in fallbacks) == ["0", "1", "2", "3"]
    assert {(f[2], f[3]) for f in fallbacks} == {("6", "1")}  # one older step, all ranks
    listing = StoreView(str(runs["fb"])).checkpoints()
    assert listing[0].step == 8 and listing[0].status is Status.QUARANTINED
    assert "__2_0.distcp" in listing[0].reason


def test_resume_on_fewer_ranks_reshards_exactly(runs: dict[str, Any]) -> None:
    c = runs["c"]
    assert {s[2] for s in lines(c, "strict")} == {"CheckpointMismatch"}
    same = {tuple(r[3:]) for r in lines(runs["b"], "restored resumed")}
    elastic = {tuple(r[3:]) for r in lines(c, "restored el")}
    assert len(same) == 1 and elastic == same  # the full model and optimizer, bit for bit
    assert len(lines(c, "final el")) == 2
    (event,) = [e for e in read_events(open_store(str(runs["el"]))) if e.kind == "elastic"]
    assert (event.get("from_world_size"), event.get("to_world_size")) == (4, 2)
    assert event.get("resharded_loaders") == ["loader"]


def test_the_interrupted_epoch_is_seen_once_across_old_and_new_ranks(runs: dict[str, Any]) -> None:
    out = runs["out"]
    seen: collections.Counter[int] = collections.Counter()
    for tag in ("run", "el"):
        for f in out.glob(f"seen-{tag}-*.jsonl"):
            for line in f.read_text().splitlines():
                epoch, idx = json.loads(line)
                if epoch == 1:
                    seen.update(idx)
    assert sorted(seen) == list(range(96)) and set(seen.values()) == {1}


def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint_newest(
    runs: dict[str, Any],
) -> None:
    c, store = runs["c"], runs["el"]
    assert c.returncode != 0
    (committed,) = {int(r[2]) for r in lines(c, "committed")}
    assert newest(store).step == committed
    partial = newest(store, Status.PARTIAL)
    assert partial.step == committed + 1


def test_a_sharded_checkpoint_in_s3_resumes_exactly(runs: dict[str, Any]) -> None:
    c = runs["c"]
    saved = {r[1]: r[2:] for r in lines(c, "s3saved")}
    restored = {r[1]: r[2:] for r in lines(c, "s3restored")}
    assert sorted(saved) == ["0", "1"] and restored == saved, c.stderr[-3000:]
    assert {s[0] for s in saved.values()} == {"5"}
    # Saves at steps 2 and 4 in the background, the Guard's last on the training thread.
    writes = {(r[2], r[3]): r[4] for r in lines(c, "wrote s3")}
    assert writes == {(k, s): "1" if s != "5" else "0" for k in "01" for s in ("2", "4", "5")}
    newest_in_s3 = StoreView(runs["s3"]).checkpoints()[0]
    info = sharded_info(newest_in_s3.manifest)
    assert newest_in_s3.step == 5 and info is not None and sorted(info.shards) == [0, 1]


def cli_without_torch(*commands: list[str]) -> list[tuple[int, str]]:
    """(exit code, stdout + stderr) of each ``spotsafe`` command, run in one fresh
    interpreter that must not import torch (ls and verify start fast without it)."""
    code = textwrap.dedent(f"""
        import json, sys
        from click.testing import CliRunner
        from spotsafe.cli import cli
        for args in {[list(c) for c in commands]!r}:
            r = CliRunner().invoke(cli, args)
            print(json.dumps([r.exit_code, r.stdout + r.stderr]))
        assert "torch" not in sys.modules, "torch was imported"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(json.loads(line)) for line in done.stdout.splitlines()]


def test_ls_and_verify_show_each_sharded_checkpoint_and_check_every_shard(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(runs["out"] / "run", store)
    bad = newest(store)
    (shard,) = (store / bad.path).glob("__3_*.distcp")
    flip_byte(shard)  # rank 3's shard: the other ranks' files are intact
    (ls_code, ls_out), (code, out), (el_code, el_out) = cli_without_torch(
        ["ls", str(store)], ["verify", str(store)], ["ls", str(runs["el"])]
    )
    assert ls_code == 0
    rows = ls_out.splitlines()[1:]
    assert rows and all("sharded: 4 ranks x 1 shard, " in r for r in rows if " valid " in r)
    assert code == 1
    by_path = {r.split()[-1]: r for r in rows}
    assert len(by_path) >= 3
    verified = [line for line in out.splitlines()[1:] if " valid " in line]
    assert len(verified) == len(rows) - 1
    assert all(line.endswith("every shard verified") for line in verified)
    (corrupt,) = [line for line in out.splitlines() if " corrupt " in line]
    assert corrupt.split()[0] == str(bad.step) and f"{bad.path}/{shard.name}" in corrupt
    # The elastic run's checkpoints (after its resume on 2 ranks) say 2.
    el_valid = [r for r in el_out.splitlines() if " valid " in r]
    assert el_code == 0 and el_valid
    assert all("sharded: 2 ranks x 1 shard, " in r for r in el_valid)
