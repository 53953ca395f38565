"""Using trained models: export (TFLite, SavedModel, ONNX), prediction on a folder, the HTML report.
"""

__all__ = [
    "export",
    "predict",
    "report",
]
