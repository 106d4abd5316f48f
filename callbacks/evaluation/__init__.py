"""Evaluation on feature tensors, beside the callbacks that use it (``representation_eval``, ``disentanglement``):

- ``neighbours``: weighted kNN classification (``test/knn_*``) and 1-NN retrieval (``test/retrieval_*``);
- ``logistic``: the logistic-regression probe on cached features (``test/linear_*``);
- ``clustering``: NMI / AMI / Hungarian accuracy of a clustering (``test/nmi``, ``test/ami``, ``test/acc``);
- ``probes``: DCoDR's MLP probes and regression baselines (``test/<factor>_acc``, ``test/<factor>_l1``).
"""
