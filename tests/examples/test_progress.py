"""What a run prints: significant digits, durations, the run's ETA, the header and the defaults in --help."""
import math

import pytest

from examples.progress import Eta, duration, segments, significant
from examples.train import DEFAULTS, header, parse


def test_a_small_epsilon_keeps_its_significant_digits():
    assert significant(0.0001234) == "0.000123" and significant(0.4) == "0.4" and significant(0) == "0"
    assert significant(math.inf) == "inf"


def test_durations_read_as_seconds_minutes_or_hours():
    assert [duration(s) for s in (42, 425, 10920)] == ["42s", "7m05s", "3h02m"]


def test_the_eta_counts_each_kind_of_step_at_its_own_measured_cost():
    layout = segments(["natural"] * 3 + ["crown-ibp"] * 4 + ["ibp"] * 2)
    assert layout == [(0, 3, "natural"), (3, 7, "crown-ibp"), (7, 9, "ibp")]
    eta = Eta()
    eta.record("natural", 1.0, steps=2)  # 0.5 s a step
    assert eta.left(layout, 2) == (pytest.approx(0.5 * 7), False)  # kinds not seen yet count as the cheapest
    assert eta.describe(layout, 2).startswith("≥ ")
    eta.record("crown-ibp", 8.0, steps=2)  # 4 s a step
    eta.record("ibp", 1.0)
    assert eta.left(layout, 5) == (pytest.approx(2 * 4.0 + 2 * 1.0), True)
    assert eta.left(layout, 9) == (0.0, True)


def test_help_shows_every_default():
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        parse(["--help"])
    text = " ".join(printed.getvalue().split("options:")[1].split())
    for flag, value in (("--epochs", DEFAULTS["epochs"]), ("--batch-size", DEFAULTS["batch_size"]),
                        ("--eval-every", DEFAULTS["eval_every"])):
        described = text.split(f"{flag} {flag.lstrip('-').upper().replace('-', '_')} ")[1].split(" --")[0]
        assert described.endswith(f"(default: {value})"), described


def test_the_header_names_model_data_source_method_schedule_batch_threads_and_output(tmp_path):
    import torch

    from examples.data import synthetic
    from examples.train import build_model

    args = parse(["--dataset", "synthetic", "--model", "mlp-small", "--out-dir", str(tmp_path), "--eps-train", "0.3",
                  "--schedule-start", "2", "--schedule-length", "5"])
    model = build_model(args)
    text = header(args, model, synthetic(10, True), synthetic(4, False), 7)
    count = sum(p.numel() for p in model.parameters())
    for part in (f"mlp-small (relu), {count:,} parameters", "10 training images from synthetic", "4 test images",
                 "crown-ibp, loss fusion", "0 → 0.3", "full ε from epoch 8", "beta 1 → 0", "batch 256",
                 f"{torch.get_num_threads()} thread", str(tmp_path)):
        assert part in text, part
