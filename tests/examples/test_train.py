import json

import pytest
import torch

from examples.train import main, parse

FAST = ["--dataset", "synthetic", "--train-subset", "300", "--batch-size", "50", "--test-subset", "40",
        "--pgd-steps", "5", "--verify-methods", "ibp", "crown-ibp", "--quiet", "--threads", "1"]


def test_a_short_crown_ibp_run_lowers_the_loss_and_writes_its_log_plot_and_checkpoint(tmp_path):
    results = main(FAST + ["--epochs", "3", "--eps-train", "0.01", "--eps-test", "0.01", "--schedule-start", "0",
                           "--schedule-length", "0", "--out-dir", str(tmp_path)])
    log = json.loads((tmp_path / "log.json").read_text())
    assert len(log) == 3 and log[-1]["loss"] < log[0]["loss"]
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "checkpoint.pt").exists()
    errors = results["errors"]
    assert errors["clean"] <= errors["pgd"] <= errors["verified crown-ibp"]
    assert json.loads((tmp_path / "results.json").read_text())["errors"] == errors


def test_resume_reproduces_the_parameters_of_an_uninterrupted_run(tmp_path):
    common = FAST + ["--eps-train", "0.05", "--schedule-start", "0", "--schedule-length", "1", "--beta-end", "0.5"]
    main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "straight")])
    main(common + ["--epochs", "1", "--out-dir", str(tmp_path / "resumed")])
    main(common + ["--epochs", "2", "--out-dir", str(tmp_path / "resumed"), "--resume"])
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt")
    resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt")
    for name, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0, msg=name)
    assert [e["loss"] for e in resumed["log"]] == [e["loss"] for e in straight["log"]]


def test_a_config_file_sets_flags_and_the_command_line_overrides_it(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"epochs": 7, "lr": 0.01, "method": "ibp"}))
    args = parse(["--config", str(config), "--lr", "0.002"])
    assert (args.epochs, args.lr, args.method, args.model) == (7, 0.002, "ibp", "dm-small")
    config.write_text(json.dumps({"epoch": 7}))
    with pytest.raises(SystemExit):
        parse(["--config", str(config)])



@pytest.mark.parametrize("method, activation, extra", [
    ("crown-lbp", "paramramp", ["--lines", "tight"]),
    ("singleprop", "relu", []),
    ("gloro", "relu", ["--norm", "l2", "--eps-train", "0.5", "--eps-test", "0.5"]),
    ("ibp", "paramramp", ["--l2-eps-test", "0.5"]),
    ("crown-ibp", "relu", ["--no-loss-fusion", "--beta-end", "0.5"]),
])
def test_every_method_and_activation_trains_and_is_verified(tmp_path, method, activation, extra):
    results = main(FAST + ["--model", "mlp-small", "--epochs", "2", "--schedule-start", "0", "--schedule-length", "1",
                           "--method", method, "--activation", activation, "--out-dir", str(tmp_path)] + extra)
    log = json.loads((tmp_path / "log.json").read_text())
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in log)
    errors = results["errors"]
    assert errors["clean"] <= errors["pgd"] <= min(errors["verified ibp"], errors["verified crown-ibp"])
    if method == "gloro" or "--l2-eps-test" in extra:
        l2 = results["l2 errors"]
        assert l2["clean"] <= l2["verified lipschitz"] and results["lipschitz K max"] > 0
    state = torch.load(tmp_path / "checkpoint.pt")
    assert any(k.endswith(".r") for k in state["model"]) == (activation == "paramramp")


def test_gloro_needs_the_l2_norm():
    with pytest.raises(SystemExit):
        parse(["--method", "gloro"])


def test_loss_fusion_is_on_for_bound_methods_and_needs_one():
    assert parse([]).loss_fusion and parse(["--method", "ibp"]).loss_fusion
    assert not parse(["--no-loss-fusion"]).loss_fusion and not parse(["--method", "singleprop"]).loss_fusion
    with pytest.raises(SystemExit):
        parse(["--method", "singleprop", "--loss-fusion"])


def test_a_data_dir_that_does_not_exist_fails_before_the_first_epoch(tmp_path):
    from examples.data import DataError
    out = tmp_path / "run"
    with pytest.raises(DataError, match=str(tmp_path / "typo")):
        main(FAST + ["--dataset", "mnist", "--data-dir", str(tmp_path / "typo"), "--epochs", "1",
                     "--out-dir", str(out)])
    assert not out.exists()  # no epoch ran: no checkpoint, no log


def test_a_test_split_that_is_missing_fails_before_the_first_epoch(tmp_path):
    from examples.data import DataError
    from tests.examples.test_data import write_split
    import numpy as np
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    write_split(data_dir, "train", np.zeros((20, 28, 28)), np.arange(20) % 10)  # training files only
    with pytest.raises(DataError, match=f"no t10k-images-idx3-ubyte.*in {data_dir}"):
        main(FAST + ["--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1",
                     "--out-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_labels_out_of_range_fail_before_the_first_epoch(tmp_path, monkeypatch):
    import examples.train as train_module
    from examples.data import DataError, synthetic

    def with_a_bad_label(name, train, data_dir=None):
        split = synthetic(100 if train else 20, train)
        split.labels[7] = 10  # a 10-class model has classes 0…9
        return split

    monkeypatch.setattr(train_module, "load_dataset", with_a_bad_label)
    with pytest.raises(DataError, match=r"synthetic test split .*outside 0…9.*values \[10\], first at index 7"):
        main(FAST + ["--epochs", "1", "--out-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_train_and_test_subsets_are_seeded_stratified_samples(monkeypatch):
    import examples.train as train_module
    from tests.examples.test_data import class_sorted

    monkeypatch.setattr(train_module, "load_dataset", lambda name, train, data_dir=None: class_sorted(50))
    args = parse(["--dataset", "synthetic", "--train-subset", "50", "--test-subset", "20", "--seed", "3"])
    data, test = train_module.load_data(args)
    assert data.labels.bincount().tolist() == [5] * 10 and test.labels.bincount().tolist() == [2] * 10
    again, _ = train_module.load_data(args)
    assert torch.equal(again.images, data.images)
    other, _ = train_module.load_data(parse(["--dataset", "synthetic", "--train-subset", "50", "--seed", "4"]))
    assert not torch.equal(other.images, data.images)


@pytest.mark.parametrize("device, message", [("foo", "not a device"), ("mps", "runs on cpu or cuda")]
                         + ([] if torch.cuda.is_available() else [("cuda", "sees no CUDA GPU")]))
def test_a_device_training_cannot_use_is_refused_by_name_before_anything_runs(device, message, capsys):
    with pytest.raises(SystemExit):
        parse(["--device", device])
    error = capsys.readouterr().err
    assert f"--device {device}: " in error and message in error
