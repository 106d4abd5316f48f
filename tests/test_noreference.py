"""No-reference quality of derained real rain (NIQE / BRISQUE through pyiqa's MATLAB versions): parameter files
from a local folder when offline, one line naming a missing file, both the rainy input and the output scored, and
the eval.py predict wiring into metrics.json. The parameter files are built here (random, valid shapes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLEAN_ENV, ROOT
from PIL import Image

pyiqa = pytest.importorskip("pyiqa")


def write_parameters(folder: Path) -> Path:
    import scipy.io

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    spread = rng.standard_normal((36, 36))
    scipy.io.savemat(folder / "niqe_matlab_params.mat", {"mu_prisparam": rng.standard_normal((1, 36)),
                                                         "cov_prisparam": spread @ spread.T / 36 + np.eye(36)})
    scipy.io.savemat(folder / "brisque_matlab.mat", {"sv": rng.standard_normal((20, 36)),
                                                     "sv_coef": rng.standard_normal((20, 1))})
    return folder


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """pyiqa's weight cache in a fresh folder; the restoring stub below accepted as a method."""
    import pyiqa.utils.download_util as download_util

    from callbacks import noreference_quality

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(noreference_quality, "BaseModule", RestoringStub)
    return tmp_path / "cache"


def test_a_missing_parameter_file_is_one_line_or_a_warning(tmp_path, empty_cache) -> None:
    from callbacks.noreference_quality import NoReferenceQuality, matlab_metric
    from contrastlab.errors import MissingPathError

    with pytest.raises(MissingPathError, match=r"niqe_matlab_params.mat.*params_dir.*huggingface"):
        matlab_metric("niqe", str(tmp_path / "nowhere"), allow_download=False)
    quiet = NoReferenceQuality(params_dir=str(tmp_path / "nowhere"))
    with pytest.warns(UserWarning, match="no-reference metrics skipped"):
        quiet.setup(None, RestoringStub(), "test")
    assert not quiet.scorers and not quiet.available


class RestoringStub(torch.nn.Module):
    """Stands for a restoration method: supports('restore'), a device."""

    device = torch.device("cpu")

    def supports(self, capability: str) -> bool:
        return capability == "restore"


def test_rainy_and_derained_are_scored_apart_from_local_parameters(tmp_path, empty_cache) -> None:
    from callbacks import noreference_quality

    callback = noreference_quality.NoReferenceQuality(params_dir=str(write_parameters(tmp_path / "params")))
    callback.setup(None, RestoringStub(), "test")
    assert (empty_cache / "niqe_matlab_params.mat").is_file() and set(callback.scorers) == {"niqe", "brisque"}
    g = torch.Generator().manual_seed(0)
    rainy = torch.rand(1, 3, 100, 120, generator=g) * 2 - 1
    smooth = torch.nn.functional.avg_pool2d((rainy + 1) / 2, 5, 1, 2)
    callback._update({"image": smooth}, {"rainy": rainy, "name": ["a.png"]}, torch.device("cpu"))
    callback._update({"image": smooth[..., :64, :64]}, {"rainy": rainy[..., :64, :64]}, torch.device("cpu"))
    results = callback._results("test")
    assert set(results) == {"test/niqe", "test/niqe_rainy", "test/brisque", "test/brisque_rainy"}
    assert all(np.isfinite(v) for v in results.values()) and results["test/niqe"] != results["test/niqe_rainy"]


def test_eval_predict_writes_both_scores_to_metrics_json(tmp_path) -> None:
    images = tmp_path / "rainy"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (112, 128, 3), dtype=np.uint8)).save(images / f"{i}.png")
    result = subprocess.run([sys.executable, "eval.py", "experiment=nlcl_demo", "mode=predict",
                             f"data.predict_dir={images}", f"hydra.run.dir={tmp_path / 'run'}",
                             f"callbacks.noreference.params_dir={write_parameters(tmp_path / 'params')}",
                             "callbacks.noreference.required=true", "model.generator_b.width=8",
                             "model.generator_r.width=8"], cwd=ROOT, capture_output=True, text=True,
                            env={**CLEAN_ENV, "TORCH_HOME": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["predict/images"] == 2
    assert {"predict/niqe", "predict/niqe_rainy", "predict/brisque", "predict/brisque_rainy"} <= set(metrics)
