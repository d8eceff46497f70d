#!/usr/bin/env bash
# The GPU check: distill at the real profiles' shapes (profiles/ffhq256-shape.yaml and
# profiles/ffhq1024-shape.yaml, random config-f teachers) for a few hundred steps with
# mixed precision (distill.precision auto = fp16 autocast + GradScaler on CUDA), through
# the same stage CLIs `dvc repro` runs. Prints per shape: images/s, peak GPU memory, peak
# RSS, and whether the generator loss fell. Run it once on a machine with a GPU:
#
#   bash infra/gpu-check.sh [STEPS] [OUT]          # defaults: 300 steps, .gpu-check/
#   SHAPES=ffhq256-shape bash infra/gpu-check.sh   # one shape only (a name in profiles/
#                                                  # or a profile's .yaml path)
#
# On a CPU it runs too, only slowly and in fp32 (the test suite runs it on a tiny profile).
set -euo pipefail
steps=${1:-300}
out=${2:-.gpu-check}
shapes=${SHAPES:-ffhq256-shape ffhq1024-shape}
python=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$out/mlflow.db}

for shape in $shapes; do
  dir=$out/$(basename "$shape" .yaml)
  rm -rf "$dir" && mkdir -p "$dir"
  # The shape profile, run long enough for a falling loss: a batch per GPU-sized step,
  # validation and a snapshot at the end only.
  "$python" - "$shape" "$steps" "$dir/params.yaml" <<'EOF'
import sys
from pathlib import Path

import yaml

from pipeline.params import deep_merge, parse_params

shape, steps, dest = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
profile = Path(shape) if shape.endswith(".yaml") else Path(f"profiles/{shape}.yaml")
params = deep_merge(yaml.safe_load(Path("params.yaml").read_text()),
                    yaml.safe_load(profile.read_text()))
params["distill"].update(
    steps=steps, batch_size=8 if "256" in shape else 4, precision="auto",
    checkpoint_every=steps, log_every=max(1, steps // 20),
    # a machine check (speed, memory, the loss falling), not a quality gate: a few hundred
    # steps on a random teacher may leave samples over the exploded line; report, not fail
    validation={**params["distill"]["validation"], "every": steps, "num_samples": 16,
                "batch_size": 8, "max_exploded": None},
    elastic={**params["distill"]["elastic"], "start_step": steps // 2})
parse_params(params)  # refuse a bad combination before any work
dest.write_text(yaml.safe_dump(params, sort_keys=False))
EOF
  echo "== $shape: fetch_teacher"
  "$python" -m components.fetch_teacher --no-progress --params "$dir/params.yaml" \
    --out "$dir/teacher" --metrics "$dir/fetch_teacher.json"
  echo "== $shape: distill, $steps steps"
  "$python" -m components.distill --no-progress --params "$dir/params.yaml" \
    --teacher "$dir/teacher/teacher.safetensors" --out "$dir/student" \
    --snapshots "$dir/snapshots" --plots "$dir/plots" --metrics "$dir/distill.json"
done

"$python" - "$out" $shapes <<'EOF'
import csv
import json
import sys
from pathlib import Path

import torch
import yaml

out, shapes = Path(sys.argv[1]), [Path(s).name.removesuffix(".yaml") for s in sys.argv[2:]]
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (fp32)"
print(f"\nGPU check on {device}, torch {torch.__version__}")
print("loss: the generator's total at the first logged step and at the last step before the\n"
      "elastic phase (sub-networks and their consistency terms come after it); L1: the EMA\n"
      "student's mean pixel L1 to the teacher on the validation latents, step 0 -> end")
print(f"{'shape':16} {'steps':>6} {'img/s':>8} {'GPU GB':>7} {'RSS GB':>7} "
      f"{'loss':>17} {'L1':>13}  falls")
for shape in shapes:
    m = json.loads((out / shape / "distill.json").read_text())
    params = yaml.safe_load((out / shape / "params.yaml").read_text())
    full_phase = params["distill"]["elastic"]["start_step"] or m["steps"]
    rows = [r for r in csv.DictReader(open(out / shape / "plots" / "losses.csv"))
            if int(r["step"]) <= max(full_phase, 1)] or list(
                csv.DictReader(open(out / shape / "plots" / "losses.csv")))
    first, last = float(rows[0]["total_g"]), float(rows[-1]["total_g"])
    l1 = (m["pixel_l1_start"], m["pixel_l1_end"])
    gpu = m.get("peak_gpu_gb")
    falls = last < first and l1[1] < l1[0]
    print(f"{shape:16} {m['steps']:>6} {m['images_per_second']:>8.3f} "
          f"{gpu if gpu is not None else '-':>7} {m['peak_rss_gb']:>7.2f} "
          f"{first:>8.3f}->{last:<7.3f} {l1[0]:>6.3f}->{l1[1]:<6.3f}  {'yes' if falls else 'NO'}")
EOF
