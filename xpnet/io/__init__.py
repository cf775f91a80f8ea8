"""Files a model lives in: the checked ``.npz`` format, ONNX / PyTorch interop, and PNG figures."""
