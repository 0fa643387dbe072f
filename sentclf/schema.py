"""The data contract between steps: column names, labels and split names."""

TEXT_COLUMN = "sentence"
LABEL_COLUMN = "label"
LABEL_NAMES = ("unacceptable", "acceptable")
SPLITS = ("train", "validation", "test")

# Artifact paths inside a preprocess run.
DATA_ARTIFACT_DIR = "data"
SCHEMA_ARTIFACT = "schema.json"


def split_artifact_path(split: str) -> str:
    """Artifact path of one split's parquet file inside a preprocess run."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return f"{DATA_ARTIFACT_DIR}/{split}.parquet"
