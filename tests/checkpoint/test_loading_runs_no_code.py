"""Anyone who can write to the bucket must not get code execution on the training fleet."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import xxhash

import spotsafe
from spotsafe.checkpoint.layout import span_of
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.errors import (
    CheckpointCorrupt,
    CheckpointMismatch,
    CheckpointTooNew,
    NoValidCheckpoint,
)

SRC = Path(spotsafe.__file__).parent


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def plant(root: Path, payload: bytes, tree: object) -> None:
    """A checkpoint whose data file is ``payload``, with a manifest that matches it exactly."""
    directory = "checkpoints/step-000000000099-0badc0de"
    padded = payload + bytes(span_of(len(payload)) - len(payload))
    (root / directory).mkdir(parents=True)
    (root / directory / "data-000.bin").write_bytes(padded)
    manifest = Manifest(
        step=99, epoch=0, created_at=0.0, writer="attacker", job_id=None, attempt=None,
        generation=None, world_size=1, versions={}, config_fingerprint=None,
        files={f"{directory}/data-000.bin": len(padded)},
        tensors=[TensorEntry(file=f"{directory}/data-000.bin", offset=0, nbytes=len(payload),
                             span=len(padded), dtype="uint8", shape=[len(payload)],
                             xxh3=xxhash.xxh3_128_hexdigest(padded))],
        tree=tree,
    )  # fmt: skip
    (root / directory / "MANIFEST.json").write_bytes(manifest.to_bytes())


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_planted_pickle_with_matching_manifest_runs_nothing(tmp_path, how: str) -> None:
    marker = tmp_path / "pwned"
    if how == "pickle":
        payload = pickle.dumps(Exploit(marker))
    else:
        path = tmp_path / "evil.pt"
        torch.save({"weight": Exploit(marker)}, path)
        payload = path.read_bytes()
    state_tree = {"$dict": [
        ["objects", {"$dict": [["model", {"$dict": [["weight", {"$tensor": 0}]]}]]}],
        ["step", 99], ["epoch", 0], ["rng", {"$dict": []}],
    ]}  # fmt: skip
    plant(tmp_path, payload, state_tree)
    model = torch.nn.Linear(2, 2)
    with pytest.raises((CheckpointMismatch, CheckpointCorrupt, NoValidCheckpoint)):
        spotsafe.Checkpointer(str(tmp_path)).restore(spotsafe.TrainState(model=model))
    assert not marker.exists()


def test_unknown_tree_nodes_are_refused_not_executed(tmp_path) -> None:
    # A node kind this version does not know reads as a newer format: refused, not run.
    marker = tmp_path / "pwned"
    plant(tmp_path, pickle.dumps(Exploit(marker)), {"$pickle": {"$tensor": 0}})
    with pytest.raises(CheckpointTooNew, match="'pickle' value"):
        spotsafe.Checkpointer(str(tmp_path)).restore(spotsafe.TrainState())
    assert not marker.exists()


def test_the_package_never_unpickles() -> None:
    """No pickle.load(s) or numpy.load anywhere in spotsafe; torch.load only with
    weights_only=True (torch's allow-list unpickler: DCP's shard files hold torch.save'd
    tensors), on one line so that this test sees it. Lightning's dump_checkpoint(weights_only=
    False) writes a full checkpoint: it loads nothing."""
    pattern = re.compile(
        r"pickle\.loads?\(|numpy\.load\(|(?<!dump_checkpoint\()weights_only\s*=\s*False"
    )
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line) or ("torch.load(" in line and "weights_only=True" not in line)
    ]
    assert offenders == []


def test_saving_an_arbitrary_object_is_a_clear_error(tmp_path) -> None:
    class Holder:
        def state_dict(self) -> dict[str, object]:
            return {"fn": print}

        def load_state_dict(self, state: object) -> None: ...

    with pytest.raises(spotsafe.errors.CheckpointError, match=r"state\['objects'\]\['h'\]\['fn'\]"):
        spotsafe.Checkpointer(str(tmp_path)).save(spotsafe.TrainState(h=Holder()))
