"""Training precision: bfloat16 on CPUs with native bf16 arithmetic, fp32 elsewhere.

`auto` picks bf16 where the CPU has it (AVX512-BF16 or AMX, as oneDNN reports it at run time) and fp32
elsewhere; `bf16` asks for it (and fails on a CPU without it, rather than run an emulation slower than
fp32); `fp32` turns it off.

bf16 here is a bf16 working copy of the model with fp32 master weights (`Bf16Steps`): the forward and
backward passes run on the copy, whose weights and activations are all bf16, and its gradients land, cast
to fp32, on the model itself, which the optimizer updates in fp32 as before. The model the rest of the step
sees (validation, threshold tuning, the weight average, the best epoch's state, the ONNX export and its
parity check) is the fp32 one, untouched. Autocast, the usual lever, was measured first: 1.15-1.3x fp32
here against this copy's 1.3-1.4x, because it casts every weight on every forward pass and CoLA's short
sentences leave the matrix products too small to hide that (README, "Measured").
"""

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

PRECISION_CHOICES = ("auto", "bf16", "fp32")
# The CPU flags of native bfloat16 arithmetic (AVX512-BF16, AMX-BF16); without one, bf16 is emulated.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# A training loss other than cross-entropy on the labels (distillation: train/distill.py): fp32 logits and the
# whole batch (its labels, and whatever else the loss reads) in, the batch's loss out.
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """oneDNN's own run-time check, confirmed by the CPU's flags (AVX512-BF16 or AMX-BF16): without
    them bf16 is emulated and slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if supported is not None and not supported():
        return False
    return flags_have_native_bf16(cpu_flags())


def flags_have_native_bf16(flags: set[str]) -> bool:
    return bool(NATIVE_BF16_FLAGS & flags)


def resolve_precision(requested: str) -> str:
    """The precision that will run: `bf16` or `fp32`."""
    if requested not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    native = cpu_has_native_bf16()
    if requested == "bf16" and not native:
        raise ValueError(
            "precision=bf16 needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16 in lscpu); this one "
            "has neither: use precision=auto or fp32"
        )
    if requested == "auto":
        return "bf16" if native else "fp32"
    return requested


class Fp32Steps:
    """Forward and backward on the model itself."""

    def __init__(self, model: nn.Module, loss_fn: LossFn | None = None) -> None:
        self.model = model
        self.loss_fn = loss_fn

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's loss, its gradients accumulated on the model's parameters."""
        if self.loss_fn is None:
            loss = self.model(**batch).loss
        else:
            loss = self.loss_fn(self.model(**model_inputs(batch)).logits.float(), batch)
        loss.backward()
        return loss.detach()

    def weights_updated(self) -> None:
        """Called after every optimizer step: nothing to follow here."""


class _TokenRows:
    """The bf16 copy's token table, kept in step with the model's fp32 one row by row.

    A batch's forward pass reads only the rows of the tokens it holds, and only those rows get a gradient:
    the copy's rows are refreshed just before they are read, and its gradient is sparse (those rows), set
    into a dense fp32 gradient whose other rows stay zero. That is exact, and it spares copying and casting
    the whole table (half of MiniLM's weights) twice a step.
    """

    def __init__(self, target: nn.Embedding, source: nn.Embedding) -> None:
        self.target, self.source = target.weight, source.weight
        source.sparse = True
        self.grad = torch.zeros_like(self.target)
        self.touched = torch.empty(0, dtype=torch.long)

    @torch.no_grad()
    def refresh(self, input_ids: torch.Tensor) -> None:
        rows = torch.unique(input_ids)
        self.source.index_copy_(0, rows, self.target.index_select(0, rows).to(self.source.dtype))

    @torch.no_grad()
    def gradient(self) -> None:
        grad = self.source.grad.coalesce()
        rows = grad.indices()[0]
        self.grad.index_fill_(0, self.touched, 0.0)
        self.grad.index_copy_(0, rows, grad.values().to(self.grad.dtype))
        self.touched = rows
        self.target.grad = self.grad
        self.source.grad = None


def _input_embedding(model: nn.Module) -> nn.Embedding | None:
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if get is not None else None
    return embedding if isinstance(embedding, nn.Embedding) else None


class Bf16Steps:
    """Forward and backward on a bf16 copy of the model; fp32 gradients on the model's own parameters.

    The copy's parameters follow the model's after every optimizer step (`weights_updated`), so the
    optimizer, gradient clipping, the learning-rate schedule and everything that reads the model work on
    fp32 weights: updates far smaller than bf16's resolution (8 bits of mantissa) are not rounded away.
    The bf16-specific cost is the casts (gradients to fp32, weights to bf16); the token table's rows are
    cast only where a batch uses them (`_TokenRows`). Sharing the fp32 token table with the copy instead
    was measured slower (1.28x fp32 against 1.34x for copying it whole).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn | None = None) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.copy = copy.deepcopy(model).to(torch.bfloat16)
        self.copy.train()
        table = _input_embedding(model)
        self.tokens = _TokenRows(table, _input_embedding(self.copy)) if table is not None else None
        own = dict(self.copy.named_parameters())
        pairs = [
            (p, own[name])
            for name, p in model.named_parameters()
            if p.requires_grad and (table is None or p is not table.weight)
        ]
        self.targets = [target for target, _ in pairs]
        self.sources = [source for _, source in pairs]
        # fp32 gradient buffers kept across steps: casting into them is half the cost of allocating anew.
        self.grads = [torch.zeros_like(p) for p in self.targets]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"]
        inputs = model_inputs(batch)
        if self.tokens is not None:
            self.tokens.refresh(inputs["input_ids"])
        logits = self.copy(**inputs).logits
        # The loss itself in fp32: log-softmax over bf16 logits would round the small differences away.
        if self.loss_fn is not None:  # distillation (train/distill.py): the batch carries a teacher's logits
            loss = self.loss_fn(logits.float(), batch)
        elif labels.is_floating_point():  # several labels per text: multi-hot targets (multilabel_head.py)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        else:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        sources = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.sources]
        torch._foreach_copy_(self.grads, sources)
        for target, grad in zip(self.targets, self.grads, strict=True):
            target.grad = grad
        for source in self.sources:
            source.grad = None
        if self.tokens is not None:
            self.tokens.gradient()
        return loss.detach()

    @torch.no_grad()
    def weights_updated(self) -> None:
        torch._foreach_copy_(self.sources, self.targets)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model itself takes of a batch: not its labels, nor a teacher's logits."""
    return {name: value for name, value in batch.items() if name not in ("labels", "teacher_logits")}


def training_steps(model: nn.Module, precision: str, loss_fn: LossFn | None = None) -> Fp32Steps | Bf16Steps:
    """What runs each training batch at `precision` (`bf16` or `fp32`, as resolved); `loss_fn` replaces the
    cross-entropy on the labels (None: cross-entropy, as always)."""
    return Bf16Steps(model, loss_fn) if precision == "bf16" else Fp32Steps(model, loss_fn)
