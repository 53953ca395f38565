"""Using trained models: export (TFLite, SavedModel, ONNX), prediction on a folder, the HTML report, an HTTP API.
"""

__all__ = [
    "export",
    "predict",
    "report",
    "serve",
]
