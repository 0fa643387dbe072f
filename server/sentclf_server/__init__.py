"""sentclf_server: a KServe v2 / Open Inference Protocol gRPC server for an ONNX sentence classifier."""

__version__ = "0.1.0"
SERVER_NAME = "sentclf-server"
