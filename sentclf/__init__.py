"""Shared code of the sentence-classification pipeline.

Every step imports from here instead of copying: the data schema, tracking helpers that find
runs and artifacts through the MLflow API, metrics, and container helpers.
"""

__version__ = "0.1.0"
