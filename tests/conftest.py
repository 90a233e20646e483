"""Test-wide settings: offline, CPU only, few threads (CI has 2 cores)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402

torch.set_num_threads(2)

# The repository root, for `import benchmarks.<script>` (the benchmark scripts live outside the package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
