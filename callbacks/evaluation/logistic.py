"""The logistic-regression probe on cached frozen features (``test/linear_top1``), run at the end of every
pretraining. Not to be confused with the linear-evaluation *protocol* (``experiment=linear_*``,
``lightning_modules.linear_probe.LinearProbe``), which trains on augmented images through the frozen trunk."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from callbacks.evaluation.neighbours import topk_accuracy


def logistic_regression_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Logistic regression on frozen features (L2-normalised, then standardised with the training statistics):
    SGD with momentum, cosine schedule, zero initialisation.

    Cheap on cached features, so it runs at the end of every pretraining; the paper's ImageNet protocol
    (augmented images through the frozen trunk) is ``lightning_modules.linear_probe.LinearProbe``.
    """
    generator = torch.Generator().manual_seed(seed)
    # Lightning's test loop runs under inference mode: leave it, and clone the inference tensors out of it.
    with torch.inference_mode(False), torch.enable_grad():
        train_x, test_x = F.normalize(train_x.float().clone(), dim=1), F.normalize(test_x.float().clone(), dim=1)
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        train_y, test_y = train_y.clone(), test_y.clone()
        classifier = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
        torch.nn.init.zeros_(classifier.weight)  # a convex problem: zero start, no draw from the global RNG
        torch.nn.init.zeros_(classifier.bias)
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        steps = epochs * max(1, -(-train_x.shape[0] // batch_size))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(epochs):
            order = torch.randperm(train_x.shape[0], generator=generator).to(train_x.device)
            for start in range(0, train_x.shape[0], batch_size):
                index = order[start:start + batch_size]
                loss = F.cross_entropy(classifier(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        with torch.no_grad():
            accuracy = topk_accuracy(classifier(test_x), test_y, (1, 5))
    return {"top1": accuracy[1], "top5": accuracy[5]}
