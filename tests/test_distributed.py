"""Two CPU processes (gloo) give what one process gives: MoCo gradients and keys, the queue, k-means and the
prototype state, kNN accuracy; plus the collectives' single-process fall-backs."""

from __future__ import annotations

import socket

import dist_helpers as helpers
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, tmp_path) -> list[dict]:
    mp.spawn(fn, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    name = {"moco": "moco", "dcodr": "dcodr"}.get(fn.__name__.split("_")[0], "cluster")
    return [torch.load(tmp_path / f"{name}{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.ddp
def test_moco_gradients_keys_and_queue_match_one_process(tmp_path) -> None:
    ranks = spawn(helpers.moco_and_queue, tmp_path)
    data = helpers.shared_data()
    model = helpers.build_moco()
    q = model.query(data["x_q"])
    k = model.key(data["x_k"])
    loss, _ = model.instance_loss(q, k, model.queue.snapshot())
    loss.backward()
    model.queue.enqueue(k)
    # Keys: shuffle-BN over ranks leaves each sample's key unchanged (no BN here) and returns them in order.
    assert torch.allclose(torch.cat([r["k"] for r in ranks]), k, atol=1e-6)
    # Queue: both ranks enqueue the gathered global batch; equal to one process enqueueing the whole batch.
    for r in ranks:
        assert torch.allclose(r["queue"], model.queue.keys, atol=1e-6) and int(r["pointer"]) == 4
    # Gradients: DDP's average over ranks equals the gradient of the single-process loss on the whole batch.
    for name, p in model.encoder_q.named_parameters():
        for r in ranks:
            assert torch.allclose(r["grads"][name], p.grad, atol=1e-6), name


@pytest.mark.ddp
def test_kmeans_prototypes_and_knn_match_one_process(tmp_path) -> None:
    from callbacks.representation_eval import RepresentationEvaluation
    from lightning_modules.components.kmeans import hierarchical_kmeans
    from lightning_modules.hcsc.prototypes import PrototypeHierarchy

    ranks = spawn(helpers.clustering_and_knn, tmp_path)
    data = helpers.shared_data()
    levels = hierarchical_kmeans(data["features"], [6, 3], iterations=8, restarts=2, seed=1, distributed=False)
    hierarchy = PrototypeHierarchy(2)
    hierarchy.update(levels, torch.arange(60), 60, distributed=False)
    knn = RepresentationEvaluation(knn_k=[3, 10])._knn(None, data["bank"], data["bank_labels"], data["queries"],
                                                        data["query_labels"], 3, "val")
    clusters = RepresentationEvaluation(cluster_k=[3, 5])._cluster_scores(data["bank"], data["bank_labels"], 3,
                                                                          sharded=False)
    for r in ranks:
        assert torch.equal(r["assignments"], levels[0].assignments)
        for ours, theirs in zip(r["centroids"], [lvl.centroids for lvl in levels]):
            assert torch.allclose(ours, theirs, atol=1e-5)
        for ours, theirs in zip(r["phi"], [lvl.concentration for lvl in levels]):
            assert torch.allclose(ours, theirs, atol=1e-5)
        for key, value in hierarchy.state_dict().items():
            assert torch.allclose(r["hierarchy"][key].float(), value.float(), atol=1e-5), key
        assert r["knn"] == pytest.approx(knn)
        assert r["clusters"] == pytest.approx(clusters) and set(clusters) == {
            "test/nmi", "test/ami", "test/acc", "test/nmi_k5", "test/ami_k5", "test/acc_k5"}


def test_collectives_are_identities_on_one_process() -> None:
    from lightning_modules.components.distributed import all_reduce_sum, broadcast, gather, gather_variable

    x = torch.randn(3, 2, requires_grad=True)
    assert gather(x) is x and gather_variable(x) is x and broadcast(x) is x
    y = torch.ones(2)
    assert all_reduce_sum(y) is y
    assert F.normalize(x, dim=1).shape == (3, 2)


@pytest.mark.ddp
def test_two_process_knn_with_averaged_batchnorm_equals_one_process(tmp_path) -> None:
    """DDP leaves BN running statistics per rank; averaged before evaluation, 2-process kNN = 1-process kNN."""
    from callbacks.representation_eval import RepresentationEvaluation

    ranks = spawn(helpers.bn_sync_and_knn, tmp_path)
    assert torch.equal(ranks[0]["mean"], ranks[1]["mean"]) and torch.equal(ranks[0]["var"], ranks[1]["var"])
    model = helpers.BNTrunk().eval()
    stats = []
    for rank in range(2):
        helpers.rank_statistics(model, rank)
        stats.append((model.net[1].running_mean.clone(), model.net[1].running_var.clone()))
    model.net[1].running_mean.copy_((stats[0][0] + stats[1][0]) / 2)
    model.net[1].running_var.copy_((stats[0][1] + stats[1][1]) / 2)
    assert torch.allclose(ranks[0]["mean"], model.net[1].running_mean, atol=1e-6)
    data = helpers.shared_data()
    # The bank in the order the gather assembles it (rank-strided shards), which kNN does not depend on.
    order = torch.cat([torch.arange(30)[r::2] for r in range(2)])
    queries = torch.cat([torch.arange(11)[r::2] for r in range(2)])
    with torch.no_grad():
        expected = RepresentationEvaluation(knn_k=[3, 10])._knn(
            None, model.embed(data["bank"][order]), data["bank_labels"][order], model.embed(data["queries"][queries]),
            data["query_labels"][queries], 3, "val")
    assert ranks[0]["knn"] == expected == ranks[1]["knn"]


@pytest.mark.ddp
def test_dcodr_two_ranks_sharing_a_global_batch_give_its_one_process_loss_and_gradient(tmp_path) -> None:
    from lightning_modules.dcodr.losses import DomainContrastiveLoss

    ranks = spawn(helpers.dcodr_global_batch, tmp_path)
    batch = helpers.dcodr_batch()
    encoder = torch.nn.Linear(8, 4, bias=False)
    torch.nn.init.normal_(encoder.weight, generator=torch.Generator().manual_seed(0))
    loss = DomainContrastiveLoss(0.2, num_negatives=None)(encoder(batch["x"]), encoder(batch["x_pos"]),
                                                         batch["domains"])
    loss.backward()
    for r in ranks:
        assert r["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert torch.allclose(r["grad"], encoder.weight.grad, atol=1e-6)
