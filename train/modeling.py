"""The classifier: the backbone's encoder with a classification head on mean-pooled token states.

all-MiniLM-L6-v2 was trained (contrastively) to produce sentence embeddings by mean pooling; its [CLS]
pooler was not. Pooling the way the backbone was trained gives the head a far better starting point than
BertForSequenceClassification's [CLS] pooler (`pooling=cls` keeps that head for comparison).
"""

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_CHOICES = ("mean", "mix", "cls")


class MeanPoolingClassifier(nn.Module):
    """Encoder -> masked mean over tokens -> dropout -> linear. Same inputs and `logits` output as the
    Hugging Face sequence classifiers, so training, export and serving treat both alike.

    With `layer_mix`, the tokens are a learned softmax-weighted sum of every layer's states (embeddings
    included) instead of the last layer's: grammatical features live mostly in the middle layers, and this
    backbone's top layers were trained for sentence similarity, which is deliberately blind to them.
    """

    def __init__(self, source: str, config: PretrainedConfig, layer_mix: bool = False) -> None:
        super().__init__()
        self.config = config
        self.encoder = AutoModel.from_pretrained(source, config=config, add_pooling_layer=False)
        self.layer_weights = nn.Parameter(torch.zeros(config.num_hidden_layers + 1)) if layer_mix else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def token_states(self, output) -> torch.Tensor:
        if self.layer_weights is None:
            return output.last_hidden_state
        weights = torch.softmax(self.layer_weights, dim=0)
        return torch.einsum("l,lbth->bth", weights, torch.stack(output.hidden_states))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        output = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=self.layer_weights is not None,
        )
        hidden = self.token_states(output)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        if labels is None:
            loss = None
        elif labels.is_floating_point():  # several labels per text: multi-hot targets, a sigmoid per label
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        else:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build_classifier(source: str, config: PretrainedConfig, pooling: str) -> nn.Module | PreTrainedModel:
    """The model to fine-tune; `pooling` is `mean` (default), `mix` (mean over a learned mix of all
    layers) or `cls` (the stock HF head)."""
    if pooling in ("mean", "mix"):
        return MeanPoolingClassifier(source, config, layer_mix=pooling == "mix")
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(source, config=config)
    raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got {pooling!r}")
