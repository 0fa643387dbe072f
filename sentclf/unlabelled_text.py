"""Unlabelled text as people point to it: a server's capture folder, a file, or a folder of files.

Two rooms read it: `tools.label_next` (the sentences to label next) and preprocess's `unlabelled`
parameter (text a teacher labels for the student, docs/teacher.md). One reader, so both accept the same
things and refuse them with the same messages: a `.txt` file is one sentence a line; `.csv`, `.tsv`,
`.jsonl` and `.parquet` files give their text column; a folder holding `capture-*.jsonl` records is a
capture folder (the served texts; a capture written with CAPTURE_TEXT=false holds hashes only).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
# preprocess's `unlabelled` when there is none.
NO_UNLABELLED = "none"


class TextSourceError(ValueError):
    """The text cannot be read; the message names the problem and the fix."""


def sentence_key(text: str) -> str:
    """Sentences compared as preprocess compares them (its validation.sentence_key): case- and
    whitespace-insensitively."""
    return " ".join(text.split()).casefold()


def capture_texts(folder: Path, flag: str = "--capture") -> list[str]:
    """The texts of a capture folder's served records."""
    from sentclf.traffic import CAPTURE_GLOB, read_capture, served_records

    if not folder.is_dir():
        raise TextSourceError(f"{flag} {folder}: not a folder (give the server's capture folder)")
    records = served_records(read_capture(folder, None))
    if records.empty:
        raise TextSourceError(
            f"{flag} {folder}: no capture records ({CAPTURE_GLOB}) in it; serve with CAPTURE=<folder> "
            "(make serve) and send traffic first, or give a file of text"
        )
    if "text" not in records:
        raise TextSourceError(
            f"{flag} {folder}: its {len(records)} records hold no text (captured with CAPTURE_TEXT=false, "
            "hashes only): give a file of text, or capture with text"
        )
    return [t for t in records["text"].tolist() if isinstance(t, str)]


def is_capture_folder(path: Path) -> bool:
    from sentclf.traffic import CAPTURE_GLOB

    return path.is_dir() and any(path.glob(CAPTURE_GLOB))


def file_texts(
    path: Path, text_column: str, flag: str = "--texts", column_flag: str = "--text-column"
) -> list[str]:
    """The texts of one unlabelled file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    if suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    elif suffix == ".jsonl":
        frame = pd.read_json(path, lines=True, dtype=False)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise TextSourceError(
            f"{flag} {path}: a {suffix or 'suffixless'} file; give {', '.join(TEXT_SUFFIXES)}"
        )
    if text_column not in frame.columns:
        raise TextSourceError(
            f"{flag} {path}: no column {text_column!r} (its columns: {', '.join(map(str, frame.columns))}); "
            f"name the text column with {column_flag}"
        )
    return [t for t in frame[text_column].tolist() if isinstance(t, str)]


def given_texts(
    path: Path, text_column: str, flag: str = "--texts", column_flag: str = "--text-column"
) -> list[str]:
    """The texts of a file, or of every file with a known suffix in a folder (sorted, recursively)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise TextSourceError(f"{flag} {path}: no {', '.join(TEXT_SUFFIXES)} files in this folder")
        return [text for file in files for text in file_texts(file, text_column, flag, column_flag)]
    if not path.is_file():
        raise TextSourceError(f"{flag} {path}: no such file or folder")
    return file_texts(path, text_column, flag, column_flag)


def any_texts(path: Path, text_column: str, flag: str, column_flag: str) -> list[str]:
    """A capture folder's served texts, else a file's or folder's (given_texts)."""
    if is_capture_folder(path):
        return capture_texts(path, flag)
    return given_texts(path, text_column, flag, column_flag)


def source_fingerprint(path: Path) -> str:
    """The bytes of every file under `path` (a file or folder), hashed: what the step cache keys a
    preprocess run that read this text on, so new capture records make a new run."""
    import hashlib

    from sentclf.dataset_snapshot import file_sha256

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(
            f"{file.relative_to(path) if file != path else file.name}\t{file_sha256(file)}\n".encode()
        )
    return digest.hexdigest()
