"""DCoDR's probes (DCoDR Sec. 4; docs/references.md, D5): the paper's MLP classifier with early stopping, its
regression counterpart, and the ridge / median baselines. 1-NN retrieval is in ``neighbours.py``, the logistic
regression in ``logistic.py``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def mlp_classifier(in_dim: int, num_classes: int, hidden: int = 128, layers: int = 6) -> nn.Sequential:
    """The DCoDR probe: [Linear (no bias) -> BatchNorm -> LeakyReLU] x (layers - 1) -> Linear."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU()]
        dim = hidden
    modules.append(nn.Linear(dim, num_classes))
    return nn.Sequential(*modules)


def _fit_mlp(
    train_x: torch.Tensor, train_y: torch.Tensor, out_dim: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], float], epochs: int, patience: int, batch_size: int,
    lr: float, val_fraction: float, seed: int,
) -> nn.Module:
    """Train the probe on all but a ``val_fraction`` of the codes; stop after ``patience`` epochs without a better
    validation score (higher is better) and return the best epoch's weights. Needs grad mode (callers enable it)."""
    generator = torch.Generator().manual_seed(seed)
    device = train_x.device
    order = torch.randperm(train_x.shape[0], generator=generator).to(device)
    n_val = max(1, int(round(train_x.shape[0] * val_fraction)))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mlp_classifier(train_x.shape[1], out_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    best, best_state, stale = -float("inf"), copy.deepcopy(model.state_dict()), 0
    for _ in range(epochs):
        permutation = fit_idx[torch.randperm(fit_idx.shape[0], generator=generator).to(device)]
        for start in range(0, permutation.shape[0], batch_size):
            index = permutation[start:start + batch_size]
            if index.shape[0] < 2:  # BatchNorm needs two samples
                continue
            loss = loss_fn(model(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        recalibrate_batchnorm(model, train_x[fit_idx])
        score = score_fn(model, train_x[val_idx], train_y[val_idx])
        if score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> None:
    """Set every BatchNorm's running statistics to the exact mean / variance over ``x`` (one pass, no update of
    the weights). With momentum 0.1 and few steps per epoch (a few hundred codes: one or two batches), the running
    statistics stay near their initial values and the eval-mode probe scores below chance; the fitted codes'
    own statistics fix that (deviation from the official probe, which evaluates with the running averages)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or x.shape[0] < 2:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the chunks
    was_training = model.training
    model.train()
    for i in range(0, x.shape[0], chunk):
        if x[i:i + chunk].shape[0] >= 2:
            model(x[i:i + chunk])
    model.train(was_training)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train(was_training)
    return out


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_predict(model, x).argmax(1) == y).float().mean()) if x.shape[0] else 0.0


def mlp_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    epochs: int = 100, patience: int = 7, batch_size: int = 128, lr: float = 1e-3, val_fraction: float = 0.1,
    seed: int = 0,
) -> float:
    """Test accuracy of the MLP probe: Adam 1e-3 (0.9, 0.999), batch 128, at most ``epochs`` epochs, stopped after
    ``patience`` epochs without a better validation accuracy (10 % of the training codes), best weights reloaded.

    The official code steps its MultiStepLR with the loss value, so its rate never decays; we use no schedule.
    """
    # Lightning's test loop runs under inference mode: leave it, and clone the inference tensors out of it.
    with torch.inference_mode(False), torch.enable_grad():
        train_x, train_y = train_x.float().clone(), train_y.long().clone()
        model = _fit_mlp(train_x, train_y, num_classes, F.cross_entropy, _accuracy, epochs, patience, batch_size,
                         lr, val_fraction, seed)
        return _accuracy(model, test_x.float().clone(), test_y.long().clone())


def mlp_regression_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, epochs: int = 100,
    patience: int = 7, batch_size: int = 128, lr: float = 1e-3, val_fraction: float = 0.1, seed: int = 0,
) -> float:
    """Mean absolute test error of the same MLP regressing continuous targets (N,) or (N, K) (DCoDR's CelebA
    protocol: 68 landmarks, L1 error in pixels, lower is better); trained with the L1 loss, stopped on the
    validation L1 error.

    Deviation: targets are standardised with the training statistics while fitting (the error is reported in the
    original units), so that one learning rate suits pixels and unit-scale values alike.
    """
    with torch.inference_mode(False), torch.enable_grad():
        train_y, test_y = _as_matrix(train_y.clone()), _as_matrix(test_y.clone())
        mean, std = train_y.mean(0), train_y.std(0).clamp_min(1e-6)

        def negative_l1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
            return -float((_predict(model, x) - y).abs().mean())

        model = _fit_mlp(train_x.float().clone(), (train_y - mean) / std, train_y.shape[1], F.l1_loss, negative_l1,
                         epochs, patience, batch_size, lr, val_fraction, seed)
        prediction = _predict(model, test_x.float().clone()) * std + mean
        return float((prediction - test_y).abs().mean())


def _as_matrix(y: torch.Tensor) -> torch.Tensor:
    y = y.float()
    return y[:, None] if y.ndim == 1 else y.flatten(1)


@torch.no_grad()
def ridge_regression_l1(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                        ridge: float = 1e-3) -> float:
    """Mean absolute test error of a linear least-squares probe (closed form, a small ridge) on L2-normalised,
    standardised codes: the linear counterpart of ``mlp_regression_probe``."""
    train_x, test_x = F.normalize(train_x.double(), dim=1), F.normalize(test_x.double(), dim=1)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    design = torch.cat(((train_x - mean) / std, torch.ones_like(train_x[:, :1])), 1)
    targets = _as_matrix(train_y).double()
    gram = design.T @ design + ridge * design.shape[0] * torch.eye(design.shape[1], dtype=design.dtype,
                                                                    device=design.device)
    weights = torch.linalg.solve(gram, design.T @ targets)
    test_design = torch.cat(((test_x - mean) / std, torch.ones_like(test_x[:, :1])), 1)
    return float((test_design @ weights - _as_matrix(test_y).double()).abs().mean())


def median_predictor_l1(train_y: torch.Tensor, test_y: torch.Tensor) -> float:
    """The regression counterpart of chance: the L1 error of predicting the training median for every sample."""
    train_y, test_y = _as_matrix(train_y), _as_matrix(test_y)
    return float((test_y - train_y.median(0).values).abs().mean())
