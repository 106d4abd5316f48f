"""Probes for disentanglement (DCoDR spec Sec. 4.2): the paper's MLP classifier with early stopping, and 1-NN
retrieval. The linear probe is ``lightning_modules.components.evaluation.linear_probe``."""

from __future__ import annotations

import copy

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


def mlp_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    epochs: int = 100, patience: int = 7, batch_size: int = 128, lr: float = 1e-3, val_fraction: float = 0.1,
    seed: int = 0,
) -> float:
    """Test accuracy of the MLP probe: Adam 1e-3 (0.9, 0.999), batch 128, at most ``epochs`` epochs, stopped after
    ``patience`` epochs without a better validation accuracy (10 % of the training codes), best weights reloaded.

    The official code steps its MultiStepLR with the loss value, so its rate never decays; we use no schedule.
    """
    generator = torch.Generator().manual_seed(seed)
    device = train_x.device
    with torch.inference_mode(False), torch.enable_grad():
        train_x, train_y = train_x.float().clone(), train_y.long().clone()
        test_x, test_y = test_x.float().clone(), test_y.long().clone()
        order = torch.randperm(train_x.shape[0], generator=generator).to(device)
        n_val = max(1, int(round(train_x.shape[0] * val_fraction)))
        val_idx, fit_idx = order[:n_val], order[n_val:]
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(seed)
            model = mlp_classifier(train_x.shape[1], num_classes).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))

        def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(x[i:i + 4096]).argmax(1) == y[i:i + 4096]).sum())
                              for i in range(0, x.shape[0], 4096))
            model.train()
            return correct / max(1, x.shape[0])

        best, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
        for _ in range(epochs):
            permutation = fit_idx[torch.randperm(fit_idx.shape[0], generator=generator).to(device)]
            for start in range(0, permutation.shape[0], batch_size):
                index = permutation[start:start + batch_size]
                if index.shape[0] < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(model(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            score = accuracy(train_x[val_idx], train_y[val_idx])
            if score > best:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
        model.load_state_dict(best_state)
        return accuracy(test_x, test_y)


@torch.no_grad()
def retrieval_top1(queries: torch.Tensor, query_index: torch.Tensor, database: torch.Tensor,
                   labels: dict[str, torch.Tensor], chunk: int = 2048) -> dict[str, float]:
    """For each query (a row of ``database`` at ``query_index``), its nearest neighbour by L2 among all other rows;
    the fraction whose neighbour shares each label (DCoDR retrieval: test images against train + test)."""
    hits = {name: 0 for name in labels}
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        distances = torch.cdist(q.float(), database.float())
        own = query_index[start:start + chunk]
        distances[torch.arange(q.shape[0], device=q.device), own] = float("inf")  # never retrieve itself
        nearest = distances.argmin(1)
        for name, values in labels.items():
            hits[name] += int((values[nearest] == values[own]).sum())
    return {name: count / max(1, queries.shape[0]) for name, count in hits.items()}
