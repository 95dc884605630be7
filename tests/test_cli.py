"""The command line: simulate works, bad input exits non-zero with one line, help is quick."""

from __future__ import annotations

import logging
import subprocess
import sys

import h5py
import pytest

from specsbi.cli import main


def test_simulate_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "train.h5"
    rc = main(["simulate", "--n", "12", "--out", str(out), "--simulator", "toy",
               "--workers", "2", "--chunk-size", "4", "--no-progress", "--fix", "log_u=-3",
               "--range", "redshift=0.1,0.2"])
    assert rc == 0 and "wrote 12" in capsys.readouterr().out
    with h5py.File(out) as h5:
        assert h5["raw/spec"].shape == (12, 3841)
        assert (h5["raw/log_u"][()] == -3).all()
        assert h5["raw/z"][()].min() >= 0.1 and h5["raw/z"][()].max() <= 0.2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "positive integer"),
        (["--n", "5", "--fix", "log_u"], "NAME=VALUE"),
        (["--n", "5", "--fix", "dust=1"], "unknown parameters"),
        (["--n", "5", "--range", "av=0"], "NAME=LOW,HIGH"),
        (["--n", "5", "--snr-min", "-1"], "snr"),
        (["--n", "5", "--workers", "0"], ">= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "x.h5"
    rc = main(["simulate", "--out", str(out), "--simulator", "toy", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err
    assert not out.exists()


def test_existing_output_exits_2(tmp_path, capsys):
    out = tmp_path / "x.h5"
    out.write_text("keep me")
    assert main(["simulate", "--n", "3", "--out", str(out), "--simulator", "toy"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_output_folders_are_created(tmp_path):
    out = tmp_path / "new" / "folder" / "x.h5"
    assert main(["simulate", "--n", "3", "--out", str(out), "--simulator", "toy",
                 "--no-progress"]) == 0
    assert out.exists()


def test_train_checkpoint_resumes_after_an_interruption(tmp_path, monkeypatch, caplog):
    from specsbi.spectrum_posterior import SpectrumPosterior

    data = tmp_path / "train.h5"
    assert main(["simulate", "--n", "200", "--out", str(data), "--simulator", "toy",
                 "--no-progress"]) == 0
    ckpt, model = tmp_path / "state" / "npe.ckpt", tmp_path / "npe"
    cmd = ["train", "npe", "--data", str(data), "--out", str(model), "--epochs", "2",
           "--checkpoint", str(ckpt), "--no-progress"]

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C came after the last epoch, before the save

    with monkeypatch.context() as patch:
        patch.setattr(SpectrumPosterior, "save", interrupted)
        assert main(cmd) == 130
    assert ckpt.exists() and not model.exists()
    caplog.clear()
    caplog.handler.setLevel(logging.INFO)
    assert main(cmd) == 0  # the same command resumes: no epoch is trained again
    assert any("resuming training" in r.message for r in caplog.records)
    assert not any(r.message.startswith("epoch ") for r in caplog.records)
    assert model.exists() and not ckpt.exists()


def test_import_and_help_are_light():
    code = ("import sys, specsbi, specsbi.cli; specsbi.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'bagpipes', 'dask', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "specsbi.cli", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "simulate" in helped.stdout and helped.stderr == ""


def test_train_and_infer_write_the_design_layout(tmp_path, capsys, caplog):
    data = tmp_path / "train.h5"
    assert main(["simulate", "--n", "300", "--out", str(data), "--simulator", "toy",
                 "--no-progress"]) == 0
    model = tmp_path / "npe"
    caplog.handler.setLevel(logging.INFO)  # the loggers' own levels stay the CLI's to set
    assert main(["train", "npe", "--data", str(data), "--out", str(model), "--epochs", "2",
                 "--no-progress"]) == 0
    # without a progress bar each epoch is logged, so a long fit in a log file shows progress
    assert [r.message.split(":")[0] for r in caplog.records
            if r.name == "specsbi.training"] == ["epoch 1", "epoch 2"]
    out = tmp_path / "post.h5"
    assert main(["infer", str(data), "--model", str(model), "--out", str(out),
                 "--samples", "20", "--chunk", "128", "--no-progress"]) == 0
    with h5py.File(out) as h5:
        assert h5["samples"].shape == (300, 20, 2)
        assert h5["summary"].shape == (300, 2, 3)
        assert [n.decode() for n in h5["param_names"][()]] == ["log_mstar", "redshift"]
        for flag in ("ood", "ood_score", "masked_fraction"):
            assert h5[f"flags/{flag}"].shape == (300,)
    capsys.readouterr()
    assert main(["infer", str(data), "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x.h5")]) == 2
    assert "no model" in capsys.readouterr().err
    assert main(["train", "npe", "--data", str(data), "--out", str(model)]) == 2
    assert "already exists" in capsys.readouterr().err
