"""``python tests/predict_runner.py predict ARGS`` (or under torchrun): the ``a3d`` command line with the
model loader replaced by the deterministic blob stand-in of test_predict_support, which sleeps
``A3D_TEST_FORWARD_S`` seconds (default 0) per forward pass: a batch slow enough to be killed
half-way, at no CPU cost. Used by the tests that run a batch in a subprocess."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from a3d.cli import main  # noqa: E402
from a3d.config import Config, DataConfig, ModelConfig  # noqa: E402
from a3d.predict import loading  # noqa: E402
from test_predict_support import BlobDetector  # noqa: E402

CFG = Config(name="blob-standin", model=ModelConfig(slices=3), data=DataConfig(size=128))


class SlowBlobDetector(BlobDetector):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, images, thickness=None):
        time.sleep(self.seconds)
        return super().forward(images, thickness)


def _load(checkpoint, device="cpu"):
    return SlowBlobDetector(float(os.environ.get("A3D_TEST_FORWARD_S", "0"))), CFG


if __name__ == "__main__":
    loading.load_predictor = _load
    sys.exit(main(sys.argv[1:]))
