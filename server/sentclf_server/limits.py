"""Request limits shared by both protocol shells: what one request may cost the server.

* Size: a gRPC message or an HTTP body over MAX_MESSAGE_BYTES is refused before it is parsed.
* Sentences per request: MAX_REQUEST_BATCH.
* Length: a sentence is cut to a character budget before it is tokenised. Hugging Face tokenizers
  tokenise a whole string before truncating it to max_seq_length tokens, so without the cut a 1 MB
  sentence costs the tokenizer about a thousand times what a 1 KB one does (and holds up every request
  batched with it) for the same max_seq_length tokens the model reads. The budget is
  max_seq_length x CHARS_PER_TOKEN characters: a WordPiece/BPE token of English text averages 4-6
  characters, so at 16 characters per token the cut leaves more text than the model reads for all but
  pathological input (long runs of whitespace or punctuation), and the answer is the one the model
  gives the whole sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHARS_PER_TOKEN = 16


class LimitExceeded(ValueError):
    """A request over one of the limits."""


@dataclass(frozen=True)
class RequestLimits:
    max_message_bytes: int
    max_request_batch: int
    max_chars: int

    @classmethod
    def for_model(cls, max_seq_length: int, max_message_bytes: int, max_request_batch: int) -> RequestLimits:
        return cls(max_message_bytes, max_request_batch, max_seq_length * CHARS_PER_TOKEN)

    def check_body(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise LimitExceeded(
                f"request of {size} bytes exceeds the limit of {self.max_message_bytes} bytes "
                "(MAX_MESSAGE_BYTES); split it"
            )

    def check_count(self, count: int, name: str) -> None:
        """An empty batch (shape [0]) is allowed: it is answered with empty outputs, as Triton does."""
        if count > self.max_request_batch:
            raise LimitExceeded(
                f"batch of {count} sentences exceeds MAX_REQUEST_BATCH={self.max_request_batch}; split it"
            )

    def cut(self, texts: Sequence[str], on_cut: Callable[[int], None] | None = None) -> list[str]:
        """Each sentence cut to max_chars characters (what the model can read of it); on_cut(count)."""
        limit = self.max_chars
        cut = [text if len(text) <= limit else text[:limit] for text in texts]
        if on_cut is not None:
            count = sum(1 for text in texts if len(text) > limit)
            if count:
                on_cut(count)
        return cut
