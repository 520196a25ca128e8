import pytest
import torch

import examples.verify as verify_module
from examples.train import main as train
from examples.verify import main as verify


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A one-epoch run's checkpoint."""
    out = tmp_path_factory.mktemp("run")
    train(["--dataset", "synthetic", "--train-subset", "200", "--batch-size", "50", "--epochs", "1",
           "--eps-train", "0.01", "--schedule-start", "0", "--schedule-length", "0", "--test-subset", "20",
           "--pgd-steps", "3", "--verify-methods", "ibp", "--quiet", "--threads", "1", "--out-dir", str(out)])
    return out / "checkpoint.pt"


def test_verify_reports_every_method_for_a_trained_checkpoint(checkpoint, capsys):
    errors = verify([str(checkpoint), "--eps", "0.005", "--test-subset", "8", "--pgd-steps", "5"])
    assert set(errors) == {"clean", "pgd", "verified ibp", "verified crown-ibp", "verified crown", "verified"}
    assert errors["clean"] <= errors["pgd"] <= min(errors["verified ibp"], errors["verified crown"])
    assert "| verified crown |" in capsys.readouterr().out


def test_verify_in_float64_converts_the_model_and_the_images(checkpoint, capsys, monkeypatch):
    seen = {}
    real = verify_module.evaluate

    def recording(bm, batches, *args, **kwargs):
        batches = list(batches)
        seen["images"] = {x.dtype for x, _ in batches}
        seen["parameters"] = {p.dtype for p in bm.parameters()} | {b.dtype for b in bm.buffers()
                                                                  if b.is_floating_point()}
        return real(bm, batches, *args, **kwargs)

    monkeypatch.setattr(verify_module, "evaluate", recording)
    # (full CROWN is left out: PyTorch's float64 CPU convolutions make it ~20× slower on DM-small)
    errors = verify([str(checkpoint), "--eps", "0.005", "--test-subset", "8", "--pgd-steps", "5", "--dtype", "float64",
                     "--methods", "ibp", "crown-ibp"])
    assert seen == {"images": {torch.float64}, "parameters": {torch.float64}}
    assert set(errors) == {"clean", "pgd", "verified ibp", "verified crown-ibp", "verified"}
    assert errors["clean"] <= errors["pgd"] <= errors["verified crown-ibp"] <= errors["verified ibp"]
    out = capsys.readouterr().out
    assert "in float64" in out and "| verified crown-ibp |" in out
    single = verify([str(checkpoint), "--eps", "0.005", "--test-subset", "8", "--pgd-steps", "5"])
    assert seen["images"] == {torch.float32} and single["clean"] == errors["clean"]


def test_verify_rejects_an_unknown_dtype(checkpoint):
    with pytest.raises(SystemExit):
        verify([str(checkpoint), "--dtype", "float16"])


def test_verify_evaluates_the_same_test_subset_as_training_did(checkpoint, monkeypatch):
    seen = []
    real = verify_module.evaluate

    def recording(bm, batches, *args, **kwargs):
        batches = list(batches)
        seen.append(torch.cat([x for x, _ in batches]))
        return real(bm, batches, *args, **kwargs)

    monkeypatch.setattr(verify_module, "evaluate", recording)
    verify([str(checkpoint), "--test-subset", "8", "--pgd-steps", "1", "--methods", "ibp"])
    verify([str(checkpoint), "--test-subset", "8", "--pgd-steps", "1", "--methods", "ibp", "--seed", "0"])
    verify([str(checkpoint), "--test-subset", "8", "--pgd-steps", "1", "--methods", "ibp", "--seed", "5"])
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])
