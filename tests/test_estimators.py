"""Estimators and the training loop: bad input, non-finite batches, checkpoints, safe files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from specsbi import Prior
from specsbi.estimators import LikelihoodEstimator, PosteriorEstimator, load_estimator
from specsbi.training import TrainConfig, train

PRIOR = Prior({"m": (-2.0, 2.0), "s": (0.5, 1.5)})
FAST = TrainConfig(max_epochs=5, batch_size=64)


def _data(n=600, seed=0):
    theta = PRIOR.draw(n, seed)
    rng = np.random.default_rng(seed)
    x = theta[:, :1] + theta[:, 1:] * rng.standard_normal((n, 3))
    return theta, x


def _npe(variant="dependent", **kw):
    return PosteriorEstimator(variant=variant, hidden=16, transforms=2, train_config=FAST,
                              progress=False, **kw)


@pytest.mark.parametrize(
    "theta, x, message",
    [
        (np.zeros((0, 2)), np.zeros((0, 3)), "empty"),
        (np.zeros((50, 2)), np.zeros((40, 3)), "50 rows but x has 40"),
        (np.full((50, 2), np.nan), np.zeros((50, 3)), "NaN"),
        (np.zeros((50, 2)), np.full((50, 3), np.inf), "NaN or inf"),
        (np.zeros((5, 2)), np.zeros((5, 3)), "at least 10"),
    ],
)
def test_bad_training_data(theta, x, message):
    with pytest.raises(ValueError, match=message):
        _npe().fit(theta, x, prior=PRIOR)


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "joint"}, "variant"), ({"flow": "realnvp"}, "flow"), ({"hidden": 0}, "hidden"),
    ({"regression": "yes"}, "regression"),
])
def test_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PosteriorEstimator(**kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize("variant", ["dependent", "augmented"])
def test_bad_observations_and_theta(variant):
    theta, x = _data()
    npe = _npe(variant).fit(theta, x, prior=PRIOR)
    with pytest.raises(ValueError, match="3 columns"):
        npe.posterior(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        npe.posterior(np.array([0.0, np.nan, 1.0]))
    post = npe.posterior(x[0])
    with pytest.raises(ValueError, match="outside the prior"):
        post.log_prob(np.array([[0.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN"):
        post.log_prob(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(k, 2\)"):
        post.log_prob(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match="not trained"):
        _npe(variant).posterior(x[0])


def test_bad_input_to_a_batch_posterior_and_sbi_calls():
    theta, x = _data()
    post = _npe().fit(theta, x, prior=PRIOR).posterior(x[:3])
    with pytest.raises(ValueError, match="outside the prior"):
        post.log_prob(np.array([[0.0, 1.0], [0.0, 1.0], [5.0, 1.0]]))  # one bad row of three
    with pytest.raises(ValueError, match=r"\(3, 2\), one θ per observation"):
        post.log_prob(theta[:2])
    with pytest.raises(ValueError, match="3 columns"):
        post.sample((10,), x=np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        post.log_prob(theta[:1], x=np.array([0.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="at least one sample"):
        post.sample(0)


@pytest.mark.parametrize("variant", ["dependent", "augmented"])
def test_bad_input_to_a_likelihood_estimator(variant):
    est = LikelihoodEstimator(variant=variant, hidden=16, transforms=2, train_config=FAST,
                              progress=False)
    with pytest.raises(ValueError, match="empty"):
        est.fit(np.zeros((0, 2)), np.zeros((0, 3)), prior=PRIOR)
    theta, x = _data()
    est.fit(theta, x, prior=PRIOR)
    with pytest.raises(ValueError, match="3 columns"):
        est.log_likelihood(theta[:2], np.zeros(4))
    with pytest.raises(ValueError, match="2 columns"):
        est.log_likelihood(np.zeros((2, 3)), x[:2])
    with pytest.raises(ValueError, match="NaN"):
        est.log_likelihood(np.array([[np.nan, 1.0]]), x[0])
    with pytest.raises(ValueError, match="NaN"):
        est.log_likelihood(theta[:1], np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="3 columns"):
        est.posterior(np.zeros(2), n_steps=10)
    with pytest.raises(ValueError, match="1 parameters; expected 2"):
        est.posterior(x[0], prior=Prior({"m": (-2.0, 2.0)}), n_steps=10)


@pytest.mark.parametrize("variant", ["dependent", "augmented"])
def test_a_fit_survives_a_bad_batch(variant):
    theta, x = _data()
    npe = _npe(variant)
    calls = {"n": 0}
    loss = npe._loss

    def one_bad_batch(net, batch, gen):  # the second training batch turns NaN
        out = loss(net, batch, gen)
        if net.training:
            calls["n"] += 1
            if calls["n"] == 2:
                out = out * torch.nan
        return out

    npe._loss = one_bad_batch
    npe.fit(theta, x, prior=PRIOR)
    assert npe.history.skipped_batches == 1
    assert np.all(np.isfinite(npe.history.val_loss))
    assert np.isfinite(npe.posterior(x[0]).sample(50)).all()


def test_training_skips_non_finite_batches_and_counts_them():
    net = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 400)[:, None]
    calls = {"n": 0}

    def loss(model, batch, gen):
        calls["n"] += 1
        out = (model(batch[0]) - 2 * batch[0]).pow(2).sum(-1)
        if model.training and calls["n"] % 3 == 0:
            out = out * torch.nan  # one bad batch in three
        return out

    hist = train(net, loss, [x], TrainConfig(max_epochs=40, batch_size=32, lr=0.05),
                 progress=False)
    assert hist.skipped_batches > 10
    assert float(net.weight.detach()) == pytest.approx(2.0, abs=0.05)


def test_checkpoint_resumes_to_the_same_result(tmp_path):
    theta, x = _data()
    full = _npe().fit(theta, x, prior=PRIOR)
    ckpt = tmp_path / "ckpt.pt"
    part = PosteriorEstimator(hidden=16, transforms=2, progress=False,
                              train_config=TrainConfig(max_epochs=2, batch_size=64))
    part.fit(theta, x, prior=PRIOR, checkpoint=ckpt)
    assert ckpt.exists()
    resumed = _npe().fit(theta, x, prior=PRIOR, checkpoint=ckpt)  # continues at epoch 2
    assert len(resumed.history.val_loss) == len(full.history.val_loss)
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values(),
                    strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    other = PosteriorEstimator(hidden=16, transforms=2, progress=False,
                               train_config=TrainConfig(max_epochs=2, batch_size=32))
    with pytest.raises(ValueError, match="other data, settings or networks"):
        other.fit(theta, x, prior=PRIOR, checkpoint=ckpt)  # another batch size
    with pytest.raises(ValueError, match="other data, settings or networks"):
        _npe().fit(theta[:500], x[:500], prior=PRIOR, checkpoint=ckpt)  # other data
    with pytest.raises(ValueError, match="other data, settings or networks"):
        PosteriorEstimator(hidden=8, transforms=2, train_config=FAST, progress=False).fit(
            theta, x, prior=PRIOR, checkpoint=ckpt)  # another network


def test_seed_makes_fits_reproducible():
    theta, x = _data()
    a = _npe(seed=3).fit(theta, x, prior=PRIOR).posterior(x[0]).log_prob(theta[:5])
    b = _npe(seed=3).fit(theta, x, prior=PRIOR).posterior(x[0]).log_prob(theta[:5])
    assert np.allclose(a, b)


@pytest.mark.parametrize("cls, variant", [
    (PosteriorEstimator, "dependent"), (PosteriorEstimator, "augmented"),
    (LikelihoodEstimator, "dependent"), (LikelihoodEstimator, "augmented"),
])
def test_save_load_round_trip(tmp_path, cls, variant):
    theta, x = _data()
    est = cls(variant=variant, hidden=16, transforms=2, train_config=FAST, progress=False)
    est.fit(theta, x, prior=PRIOR)
    folder = est.save(tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"model.json", "weights.safetensors"}
    back = load_estimator(folder)
    assert type(back) is cls and back.names == ["m", "s"] and back.prior.names == ["m", "s"]
    if cls is PosteriorEstimator:
        t = theta[:4]
        assert np.allclose(est.posterior(x[0]).log_prob(t), back.posterior(x[0]).log_prob(t),
                           atol=1e-4)
    else:
        assert np.allclose(est.log_likelihood(theta[:4], x[:4]),
                           back.log_likelihood(theta[:4], x[:4]), atol=1e-4)
    with pytest.raises(FileExistsError):
        est.save(folder)


def test_a_card_saved_before_the_regression_layer_loads_as_trained(tmp_path):
    import json

    theta, x = _data()
    old = _npe(regression=False).fit(theta, x, prior=PRIOR)
    folder = old.save(tmp_path / "model")
    card = json.loads((folder / "model.json").read_text())
    assert card.pop("regression") is False
    (folder / "model.json").write_text(json.dumps(card))  # as written before the option
    back = load_estimator(folder)
    assert back.regression is False
    assert set(back.net.state_dict()) == set(old.net.state_dict())
    t = theta[:4]
    assert np.allclose(old.posterior(x[0]).log_prob(t), back.posterior(x[0]).log_prob(t),
                       atol=1e-4)
    new = _npe().fit(theta, x, prior=PRIOR)  # the default has it, and says so in the card
    assert new.card()["regression"] is True
    assert len(new.net.state_dict()) == len(old.net.state_dict()) + 3


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_pickle_posing_as_a_model_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    theta, x = _data()
    folder = _npe().fit(theta, x, prior=PRIOR).save(tmp_path / "model")
    (folder / "weights.safetensors").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_estimator(folder)
    (tmp_path / "model.pt").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(ValueError, match="never loads pickled models"):
        load_estimator(tmp_path / "model.pt")
    assert not (tmp_path / "pwned").exists()
