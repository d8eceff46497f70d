"""The real profiles' shapes: the shape profiles keep the real architectures, and the GPU
check script works on the CPU. The runs at those shapes have a file each, so a parallel
test run starts them on different workers: ``test_shape_1024.py`` (distill at 1024 in
bounded memory), ``test_shape_256.py`` (all five stages at 256). Memory is asserted,
never time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from pipeline.params import parse_params
from tests.conftest import REPO, env_with_venv, shape_params, tiny_params

pytestmark = pytest.mark.slow


def test_shape_profiles_keep_the_real_architectures():
    """The shape checks are the real profiles' networks, only with tiny counts."""
    for shape, real in (("ffhq1024-shape", "ffhq1024"), ("ffhq256-shape", "ffhq256")):
        params = parse_params(shape_params(shape))
        assert params.profile == shape and params.fetch_teacher.is_random
        real_params = parse_params(shape_params(real))
        assert params.distill.adversarial.channel_max == real_params.distill.adversarial.channel_max
        assert params.search.min_resolution == real_params.search.min_resolution
        assert params.distill.loss == real_params.distill.loss  # the papers' objective
        assert real_params.distill.loss.gan and real_params.distill.loss.perceptual
        assert real_params.distill.elastic.consistency_lpips
    arch = parse_params(shape_params("ffhq1024-shape")).fetch_teacher.random
    assert (arch.resolution, arch.channel_multiplier, arch.style_dim, arch.n_mlp) == (1024, 2, 512, 8)


def test_gpu_check_script_runs_and_reports(tmp_path):
    """infra/gpu-check.sh, the check a session with a GPU runs, here on the CPU for 2 steps
    on a tiny profile: it must work before anyone spends device time on it."""
    profile = {"profile": "tiny-shape", "fetch_teacher": tiny_params()["fetch_teacher"],
               "metric_networks": tiny_params()["metric_networks"],  # stand-ins: no download
               "distill": {"lpips": "alex", "adversarial": {"channel_max": 16},
                           "elastic": {"min_resolution": 16}}}
    (tmp_path / "tiny-shape.yaml").write_text(yaml.safe_dump(profile))
    env = env_with_venv(SHAPES=str(tmp_path / "tiny-shape.yaml"), PYTHON=sys.executable,
                        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = subprocess.run(["bash", str(REPO / "infra/gpu-check.sh"), "4", str(tmp_path / "out")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("tiny-shape")]
    assert row.split()[1] == "4"  # steps
    assert "GPU check on cpu (fp32)" in result.stdout
    distilled = json.loads((tmp_path / "out/tiny-shape/distill.json").read_text())
    assert distilled["steps"] == 4 and distilled["peak_rss_gb"] > 0
    assert "peak_gpu_gb" not in distilled
