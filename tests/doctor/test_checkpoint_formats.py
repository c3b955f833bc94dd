"""doctor reads what a checkpoint holds in each format users have (never running its code)
and names what a resume would miss."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import spotsafe
from spotsafe.cli import cli
from spotsafe.doctor import Part, inspect_checkpoint
from spotsafe.doctor.checks import weights_only
from tests.support.tiny import tiny_state


def contents_findings(output: str) -> list[dict[str, object]]:
    """The --json findings about what the checkpoint holds; where it lies (ephemeral-store:
    tmp_path's filesystem differs between machines) is tested with the command runs."""
    return [f for f in json.loads(output)["findings"] if f["id"] != "ephemeral-store"]


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt


def hf_checkpoint(root: Path, *, optimizer: bool) -> Path:
    """A Hugging Face Trainer ``checkpoint-N`` folder, written file by file."""
    model, opt = model_and_optimizer()
    folder = root / "checkpoint-500"
    folder.mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 500, "epoch": 1.5}))
    sched = torch.optim.lr_scheduler.LinearLR(opt)
    torch.save(sched.state_dict(), folder / "scheduler.pt")
    torch.save({"python": 1, "cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    if optimizer:
        torch.save(opt.state_dict(), folder / "optimizer.pt")
    return folder


def test_hf_checkpoint_without_optimizer_state_is_weights_only(tmp_path: Path) -> None:
    hf_checkpoint(tmp_path / "out", optimizer=False)
    result = CliRunner().invoke(cli, ["doctor", "--json", "--checkpoint", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output  # an error-level finding
    [finding] = contents_findings(result.output)
    assert (finding["id"], finding["severity"]) == ("weights-only", "error")
    ev = finding["evidence"]
    assert ev["format"] == "huggingface" and ev["step"] == 500
    assert ev["checkpoint"].endswith("checkpoint-500")
    assert ev["missing"] == ["optimizer", "scaler"]
    assert ev["found"]["RNG states"] == "rng_state.pth"


def test_hf_checkpoint_with_optimizer_state_passes(tmp_path: Path) -> None:
    hf_checkpoint(tmp_path / "out", optimizer=True)
    result = CliRunner().invoke(cli, ["doctor", "--json", "--checkpoint", str(tmp_path / "out")])
    assert contents_findings(result.output) == []
    assert "weights-only" in json.loads(result.output)["checked"]


def test_lightning_ckpt_saved_weights_only_is_named(tmp_path: Path) -> None:
    model, opt = model_and_optimizer()
    full = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0",
        "state_dict": model.state_dict(), "loops": {"fit_loop": {"epoch_progress": {}}},
        "callbacks": {}, "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
    }  # fmt: skip
    torch.save(full, tmp_path / "full.ckpt")
    weights = {k: v for k, v in full.items() if k not in ("optimizer_states", "lr_schedulers")}
    torch.save(weights, tmp_path / "weights.ckpt")
    ok = inspect_checkpoint(tmp_path / "full.ckpt")
    assert ok is not None and ok.format == "lightning" and ok.step == 120
    assert ok.missing == [Part.SCHEDULER, Part.SCALER, Part.RNG]  # Lightning keeps no RNGs
    bad = inspect_checkpoint(tmp_path / "weights.ckpt")
    assert bad is not None
    finding = weights_only(bad)
    assert finding is not None and finding.severity.value == "error"
    assert finding.evidence["missing"][0] == "optimizer"


def test_dcp_directory_is_read_from_its_metadata(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    model, opt = model_and_optimizer()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp_path / "weights"))
    dcp.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": 7},
             checkpoint_id=str(tmp_path / "full"))  # fmt: skip
    weights = inspect_checkpoint(tmp_path / "weights")
    full = inspect_checkpoint(tmp_path / "full")
    assert weights is not None and full is not None
    assert weights.format == full.format == "dcp"
    assert Part.OPTIMIZER in weights.missing
    assert full.parts[Part.OPTIMIZER] == "optim"


def test_spotsafe_checkpoint_reports_its_missing_loader_and_an_inexact_one(
    tmp_path: Path,
) -> None:
    state = tiny_state()
    ckpt = spotsafe.Checkpointer(str(tmp_path / "plain"), events=False)
    ckpt.save(state)
    ckpt.close()
    plain = inspect_checkpoint(tmp_path / "plain")
    assert plain is not None and plain.format == "spotsafe"
    assert plain.missing == [Part.SCHEDULER, Part.SCALER, Part.DATA]
    data = torch.utils.data.TensorDataset(torch.arange(8.0))
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1,
                                         persistent_workers=True)  # fmt: skip
    with pytest.warns(spotsafe.data.NotExactWarning):
        state = spotsafe.TrainState(model=torch.nn.Linear(1, 1), loader=loader)
    ckpt = spotsafe.Checkpointer(str(tmp_path / "inexact"), events=False)
    ckpt.save(state)
    ckpt.close()
    result = CliRunner().invoke(cli, ["doctor", "--json", "--checkpoint",
                                      str(tmp_path / "inexact")])  # fmt: skip
    findings = {f["id"]: f for f in contents_findings(result.output)}
    assert findings["inexact-loader"]["evidence"]["loaders"].keys() == {"loader"}
    assert "persistent" in findings["inexact-loader"]["evidence"]["loaders"]["loader"]
    assert findings["weights-only"]["evidence"]["missing"][0] == "optimizer"


class Planted:
    """Unpickling this runs os.system: a checkpoint that attacks whoever loads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_is_read_but_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        payload = {"model": {}, "optimizer": Planted(marker), "step": 3}
        z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    contents = inspect_checkpoint(path)
    assert contents is not None and contents.step == 3
    assert not marker.exists()


def test_a_checkpoint_path_with_nothing_there_is_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--checkpoint", str(tmp_path)])
    assert result.exit_code == 2
    assert "no checkpoint there" in result.output
