"""Restore reads large tensors straight into the state's own tensors, and only once the
whole checkpoint checked out: a corrupt checkpoint never changes the live state, whatever
restore does next (fall back, start fresh, raise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spotsafe
from spotsafe.checkpoint import fetch
from spotsafe.checkpoint.manifest import Manifest, TensorEntry
from spotsafe.errors import NoValidCheckpoint

WIDTH = 640  # a 640x640 float32 weight: 1.6 MB


def big_state(seed: int) -> tuple[spotsafe.TrainState, torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH, bias=False), torch.nn.Linear(WIDTH, 4)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, WIDTH)).sum().backward()
    opt.step()
    return spotsafe.TrainState(model=model, optimizer=opt), model, opt


def tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for pid, s in opt.state_dict()["state"].items():
        out.update({f"opt.{pid}.{k}": v.clone() for k, v in s.items()})
    return out


def assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def save_two(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Checkpoints at steps 1 and 2 of a model whose big weight fills its own data files."""
    state, model, opt = big_state(seed=0)
    ckpt = spotsafe.Checkpointer(str(root), incremental=False, events=False)
    saved = []
    for step in (1, 2):
        with torch.no_grad():
            model[0].weight.add_(float(step))
        state.step = step
        ckpt.save(state)
        saved.append(tensors(model, opt))
    ckpt.close()
    return saved[0], saved[1]


def flip_a_byte_of_the_big_weight(root: Path, step: int) -> None:
    directory = next((root / "checkpoints").glob(f"step-{step:012d}-*"))
    manifest = Manifest.from_bytes((directory / "MANIFEST.json").read_bytes(), "m")
    big = next(e for e in manifest.tensors if e.nbytes >= WIDTH * WIDTH * 4)
    with open(root / big.file, "r+b") as f:
        f.seek(big.offset + big.nbytes - 3)  # near its end: the check reads it all first
        byte = f.read(1)
        f.seek(big.offset + big.nbytes - 3)
        f.write(bytes([byte[0] ^ 0x10]))


def test_big_tensors_are_filled_in_place_and_small_ones_loaded(tmp_path: Path) -> None:
    _, at_2 = save_two(tmp_path)
    state, model, opt = big_state(seed=7)
    weight = model[0].weight
    moment = opt.state[weight]["exp_avg"]
    where = (weight.data_ptr(), moment.data_ptr())
    info = spotsafe.Checkpointer(str(tmp_path), events=False).restore(state)
    assert info is not None and info.step == 2
    assert_equal(tensors(model, opt), at_2)
    assert opt.state[model[0].weight]["exp_avg"] is moment  # the optimizer kept its tensor
    assert (model[0].weight.data_ptr(), moment.data_ptr()) == where


def test_into_a_fresh_optimizer_the_moments_are_adopted(tmp_path: Path) -> None:
    _, at_2 = save_two(tmp_path)
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH, bias=False), torch.nn.Linear(WIDTH, 4)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # no state yet, as in a new process
    state = spotsafe.TrainState(model=model, optimizer=opt)
    assert spotsafe.Checkpointer(str(tmp_path), events=False).restore(state) is not None
    assert_equal(tensors(model, opt), at_2)


def test_a_corrupt_checkpoint_never_touches_the_live_state(tmp_path: Path) -> None:
    at_1, _ = save_two(tmp_path)
    flip_a_byte_of_the_big_weight(tmp_path, step=2)
    state, model, opt = big_state(seed=7)
    info = spotsafe.Checkpointer(str(tmp_path), events=False).restore(state)
    assert info is not None and info.step == 1 and info.fell_back
    assert_equal(tensors(model, opt), at_1)


def test_a_fresh_start_past_corrupt_checkpoints_keeps_the_state_as_it_was(tmp_path: Path) -> None:
    save_two(tmp_path)
    flip_a_byte_of_the_big_weight(tmp_path, step=1)
    flip_a_byte_of_the_big_weight(tmp_path, step=2)
    state, model, opt = big_state(seed=7)
    before = tensors(model, opt)
    with pytest.raises(NoValidCheckpoint):
        spotsafe.Checkpointer(str(tmp_path), events=False).restore(state)
    assert_equal(tensors(model, opt), before)
    again = spotsafe.Checkpointer(str(tmp_path), events=False)
    assert again.restore(state, fresh_start_ok=True) is None
    assert_equal(tensors(model, opt), before)


def test_tensors_that_cannot_be_filled_in_place_are_still_loaded(tmp_path: Path) -> None:
    # Tied weights (two names, one storage) and a non-contiguous parameter.
    torch.manual_seed(0)
    a = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    b = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    b.weight = a.weight
    t = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    t.weight = torch.nn.Parameter(torch.randn(WIDTH, WIDTH).t())
    model = torch.nn.ModuleDict({"a": a, "b": b, "t": t})
    state = spotsafe.TrainState(model=model)
    spotsafe.Checkpointer(str(tmp_path), events=False).save(state)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    other = torch.nn.ModuleDict(
        {k: torch.nn.Linear(WIDTH, WIDTH, bias=False) for k in ("a", "b", "t")}
    )
    other["b"].weight = other["a"].weight
    other["t"].weight = torch.nn.Parameter(torch.randn(WIDTH, WIDTH).t())
    spotsafe.Checkpointer(str(tmp_path), events=False).restore(spotsafe.TrainState(model=other))
    for k, v in other.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert other["a"].weight.data_ptr() == other["b"].weight.data_ptr()


def manifest_of(entries: list[tuple[int, int]], file_size: int) -> Manifest:
    """A manifest of uint8 tensors at (offset, nbytes) in one file."""
    file = "checkpoints/step-000000000001-00000000/data-000.bin"
    tensors = [
        TensorEntry(
            file=file,
            offset=o,
            nbytes=n,
            span=(n + 63) // 64 * 64,
            dtype="uint8",
            shape=[n],
            xxh3="0" * 32,
        )
        for o, n in entries
    ]
    return Manifest(step=1, epoch=0, created_at=0.0, writer="w", job_id=None, attempt=None,
                    generation=None, world_size=1, versions={}, config_fingerprint=None,
                    files={file: file_size}, tensors=tensors, tree=None)  # fmt: skip


def test_runs_join_neighbours_up_to_their_size_and_never_overlap() -> None:
    mib = 1 << 20
    m = manifest_of([(0, mib), (mib, mib), (2 * mib, 3 * mib), (2 * mib, 3 * mib)], 8 * mib)
    runs = fetch.plan_runs(m, run_bytes=2 * mib)
    assert [(r.start, r.end, r.members) for r in runs] == [
        (0, 2 * mib, (0, 1)),
        (2 * mib, 5 * mib, (2,)),  # larger than run_bytes: a run of its own
        (2 * mib, 5 * mib, (3,)),  # the same bytes again (an unchanged tensor reused twice)
    ]
    assert [r.members for r in fetch.plan_runs(m, run_bytes=0, only=[0, 1])] == [(0,), (1,)]
    assert len(fetch.plan_runs(m, whole_files=True, only=[0, 1, 2])) == 1


@pytest.mark.parametrize("chunk", [64, 4096, 1 << 20])
def test_a_streamed_check_finds_a_flipped_bit_wherever_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(fetch, "CHUNK_BYTES", chunk)
    save_two(tmp_path)
    view = spotsafe.checkpoint.StoreView(str(tmp_path))
    assert [c.status.value for c in view.verify()] == ["valid", "valid"]
    flip_a_byte_of_the_big_weight(tmp_path, step=2)
    assert [c.status.value for c in view.verify()] == ["corrupt", "valid"]


def test_many_small_tensors_are_filled_by_scattered_reads(tmp_path: Path) -> None:
    # More tensors than one preadv can scatter into, with padding between all of them.
    torch.manual_seed(0)
    params = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(3)) for _ in range(1200))
    state = spotsafe.TrainState(model=params)
    spotsafe.Checkpointer(str(tmp_path), events=False).save(state)
    saved = [p.detach().clone() for p in params]
    torch.manual_seed(1)
    other = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(3)) for _ in range(1200))
    where = [p.data_ptr() for p in other]
    spotsafe.Checkpointer(str(tmp_path), events=False).restore(spotsafe.TrainState(model=other))
    assert all(torch.equal(a, b) for a, b in zip(other, saved, strict=True))
    assert [p.data_ptr() for p in other] == where
