"""Command-line helpers the step scripts share."""

import argparse

TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(value: str) -> bool:
    """An MLproject boolean (MLflow passes every parameter as text): true/false, 1/0 or yes/no."""
    word = value.strip().lower()
    if word in TRUE_WORDS + FALSE_WORDS:
        return word in TRUE_WORDS
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
