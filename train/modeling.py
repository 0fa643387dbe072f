"""The classifier: the backbone's encoder with a classification head on mean-pooled token states.

all-MiniLM-L6-v2 was trained (contrastively) to produce sentence embeddings by mean pooling; its [CLS]
pooler was not. Pooling the way the backbone was trained gives the head a far better starting point than
BertForSequenceClassification's [CLS] pooler (`pooling=cls` keeps that head for comparison).
"""

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_CHOICES = ("mean", "cls")


class MeanPoolingClassifier(nn.Module):
    """Encoder -> masked mean over tokens -> dropout -> linear. Same inputs and `logits` output as the
    Hugging Face sequence classifiers, so training, export and serving treat both alike."""

    def __init__(self, source: str, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = AutoModel.from_pretrained(source, config=config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build_classifier(source: str, config: PretrainedConfig, pooling: str) -> nn.Module | PreTrainedModel:
    """The model to fine-tune; `pooling` is `mean` (default) or `cls` (the stock HF head)."""
    if pooling == "mean":
        return MeanPoolingClassifier(source, config)
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(source, config=config)
    raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got {pooling!r}")
