"""The search (`train -e tune`) in process: space overrides, the precision switch, and a tiny real search
with nested trial runs, a pruned trial, the best parameters, figures, register_best and resuming."""

import mlflow
import pytest
import torch

from tests.unit.test_train import TINY, data_run  # noqa: F401 (a fixture)

import precision
import tune
from search_space import DEFAULT_SPACE, parse_space

SEARCH = [
    "--trials",
    "3",
    "--timeout-min",
    "0",
    "--register-best",
    "true",
    "--space",
    "epochs=1,batch_size=16|32",
    "--prune-warmup-epochs",
    "1",
    "--force-prune",
    "2",
    "--study-name",
    "unit",
    "--registered-model-name",
    "tuned",
]


def test_space_overrides_bounds_choices_and_fixed_values():
    space = parse_space("learning_rate=1e-4:3e-4, batch_size=16|32, epochs=3, dropout=0:0.2")
    assert (space["learning_rate"].kind, space["learning_rate"].low) == ("log", 1e-4)
    assert space["batch_size"].choices == (16, 32)
    assert (space["epochs"].kind, space["epochs"].choices) == ("choice", (3,))
    assert space["dropout"].high == 0.2 and space["warmup_ratio"] == DEFAULT_SPACE["warmup_ratio"]
    assert parse_space("") == DEFAULT_SPACE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("momentum=0.9", "one of learning_rate"),
        ("learning_rate=3e-4:1e-4", "low 0.0003 is above high 0.0001"),
        ("epochs=0:3", "epochs must be >= 1"),
        ("learning_rate=0:1e-3", "learning_rate must be > 0"),
        ("batch_size=16.5", "whole number"),
    ],
)
def test_bad_space_items_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_space(text)


def test_precision_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto") == "bf16"
    assert precision.resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="native bfloat16"):
        precision.resolve_precision("bf16")
    with pytest.raises(ValueError, match="one of auto, bf16, fp32"):
        precision.resolve_precision("fp16")


class _Tiny(torch.nn.Module):
    """A token embedding, a layer and a head, shaped like the classifiers: `model(**batch)` with labels
    gives `.loss`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(10, 8)
        self.hidden = torch.nn.Linear(8, 16)
        self.classifier = torch.nn.Linear(16, 3)

    def get_input_embeddings(self):
        return self.embedding

    def forward(self, input_ids, labels=None):
        logits = self.classifier(torch.tanh(self.hidden(self.embedding(input_ids).mean(dim=1))))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return type("Output", (), {"logits": logits, "loss": loss})()


def test_bf16_steps_put_fp32_gradients_on_the_fp32_model_and_follow_its_updates():
    ids = torch.randint(0, 10, (32, 5), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": torch.arange(32) % 3}
    reference = _Tiny()
    precision.training_steps(reference, "fp32").loss(batch)
    model = _Tiny()
    steps = precision.training_steps(model, "bf16")
    assert steps.copy.hidden.weight.dtype == torch.bfloat16
    loss = steps.loss(batch)
    assert loss.dtype == torch.float32
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert ours.dtype == ours.grad.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(ours.grad.flatten(), theirs.grad.flatten(), dim=0)
        assert cosine > 0.99  # the same gradient, to bf16's precision
    assert all(p.grad is None for p in steps.sources)
    # An update far below bf16's resolution is kept by the fp32 master (where a bf16-only optimizer would
    # round it away), and the copy follows the master.
    before = model.hidden.weight.detach().clone()
    with torch.no_grad():
        model.hidden.weight.add_(1e-6)
    steps.weights_updated()
    assert torch.allclose(model.hidden.weight - before, torch.full_like(before, 1e-6), atol=5e-8)
    assert torch.equal(steps.copy.hidden.weight, model.hidden.weight.to(torch.bfloat16))


class _TinyWholeTable(_Tiny):
    """The same model with no input embedding to find: its copy's token table is cast whole every step."""

    get_input_embeddings = None


def test_bf16_token_rows_refreshed_where_used_train_as_the_whole_table_does():
    generator = torch.Generator().manual_seed(2)
    batches = [
        {"input_ids": torch.randint(0, 10, (8, 4), generator=generator), "labels": torch.arange(8) % 3}
        for _ in range(4)
    ]
    trained = []
    for model in (_Tiny(), _TinyWholeTable()):
        steps = precision.training_steps(model, "bf16")
        assert (steps.tokens is not None) == (type(model) is _Tiny)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        for batch in batches:
            steps.loss(batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps.weights_updated()
        trained.append(model)
    rows, whole = trained
    assert not torch.equal(rows.embedding.weight, _Tiny().embedding.weight)  # it did train
    for ours, theirs in zip(rows.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-3)  # the same to bf16's rounding


def test_a_tiny_search_nests_its_trials_prunes_registers_and_resumes(data_run, tracking_store):  # noqa: F811
    tune.main([*TINY, *SEARCH])
    client = mlflow.MlflowClient()
    runs = client.search_runs([tracking_store], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get("sentclf.step") == "tune"]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["tune.trial"] for r in trials] == ["0", "1", "2"]
    states = [(r.data.tags["tune.state"], r.info.status) for r in trials]
    assert states == [("COMPLETE", "FINISHED"), ("COMPLETE", "FINISHED"), ("PRUNED", "KILLED")]
    # Trial 0 is the given recipe; every trial logs its recipe and per-epoch metrics.
    assert trials[0].data.params["learning_rate"] == "5e-05"
    for trial in trials:
        assert {"learning_rate", "layer_lr_decay", "dropout", "batch_size", "max_train_samples"} <= set(
            trial.data.params
        )
        assert trial.data.params["max_train_samples"] == "64"
        # one epoch: one per-epoch value (steps count epochs from 1); the registered best trial also logs
        # the shipped model's validation figures against its model entity, at step 0
        epochs = [m for m in client.get_metric_history(trial.info.run_id, "val_mcc") if m.step > 0]
        assert len(epochs) == 1
    assert parent.data.tags["best.trial"] in ("0", "1")
    best = next(r for r in trials if r.data.tags["tune.trial"] == parent.data.tags["best.trial"])
    assert parent.data.tags["best.learning_rate"] == best.data.params["learning_rate"]
    assert parent.data.metrics["best_val_mcc"] == pytest.approx(best.data.metrics["best_val_mcc"])
    assert parent.data.metrics["trials_pruned"] == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/optimization_history.png", "figures/intermediate_values.png"} <= artifacts
    assert "figures/param_importances.png" in artifacts
    stored = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/study.db", "study/trials.csv", "study/best.json"} <= stored
    version = client.get_model_version_by_alias("tuned", "challenger")
    assert version.run_id == best.info.run_id
    assert best.info.status == "FINISHED"

    # The same study again with one more trial: only that one runs, from the stored file.
    again = [{"3": "4", "true": "false"}.get(a, a) for a in SEARCH]  # one more trial, no registration
    tune.main([*TINY, *again])
    runs = client.search_runs([tracking_store], order_by=["attributes.start_time ASC"])
    second = [r for r in runs if r.data.tags.get("sentclf.step") == "tune"][-1]
    assert second.data.tags["tune.resumed_from"] == parent.info.run_id
    new_trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert [r.data.tags["tune.trial"] for r in new_trials] == ["3"]
