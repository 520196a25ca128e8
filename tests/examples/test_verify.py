from examples.train import main as train
from examples.verify import main as verify


def test_verify_reports_every_method_for_a_trained_checkpoint(tmp_path, capsys):
    train(["--dataset", "synthetic", "--train-subset", "200", "--batch-size", "50", "--epochs", "1",
           "--eps-train", "0.01", "--schedule-start", "0", "--schedule-length", "0", "--test-subset", "20",
           "--pgd-steps", "3", "--verify-methods", "ibp", "--quiet", "--threads", "1", "--out-dir", str(tmp_path)])
    errors = verify([str(tmp_path / "checkpoint.pt"), "--eps", "0.005", "--test-subset", "8", "--pgd-steps", "5"])
    assert set(errors) == {"clean", "pgd", "verified ibp", "verified crown-ibp", "verified crown", "verified"}
    assert errors["clean"] <= errors["pgd"] <= min(errors["verified ibp"], errors["verified crown"])
    assert "| verified crown |" in capsys.readouterr().out
