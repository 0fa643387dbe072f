"""Distillation from a teacher (train/distill.py): the loss, alpha = 0 is plain training, a distilled train
run records its teacher in a run of its own, a second run reuses it, and nothing of the teacher ships."""

import argparse
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from sentclf.backbone import resolve_backbone
from sentclf.contract import STEP_TAG
from sentclf.tracking import StepInputError
from tests.unit.test_few_shot import CONTRASTIVE_ROWS, skipped_contrastive_fit
from tests.unit.test_preprocess import step_argv
from tests.unit.test_train import data_run, train_args  # noqa: F401 (data_run is a fixture)

import few_shot
import preprocess
import train
from distill import (
    LOGITS_ARTIFACT,
    TEACHER_KEY_TAG,
    TEACHER_KIND_TAG,
    TEACHER_REUSED_TAG,
    TEACHER_RUN_TAG,
    attach_teacher,
    distillation_loss,
    distillation_loss_fn,
    load_teacher_model,
    refuse_unsupported,
    teacher_key,
    teacher_prepared,
)
from modeling import build_classifier
from training import EncodedSplit, TrainConfig, predict
from training import train as train_loop


def test_the_loss_is_cross_entropy_at_alpha_0_and_kl_at_alpha_1():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.arange(8) % 5  # five classes: any label set
    plain = torch.nn.functional.cross_entropy(student, labels)
    assert torch.equal(distillation_loss(student, teacher, labels, 2.0, 0.0), plain)
    # alpha = 1: T^2 * KL(teacher_T || student_T), by hand; zero when the student copies the teacher.
    t, s = torch.softmax(teacher / 3.0, -1), torch.softmax(student / 3.0, -1)
    by_hand = 9.0 * (t * (t.log() - s.log())).sum(-1).mean()
    assert torch.allclose(distillation_loss(student, teacher, labels, 3.0, 1.0), by_hand, atol=1e-6)
    assert float(distillation_loss(teacher, teacher, labels, 3.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    mixed = distillation_loss(student, teacher, labels, 3.0, 0.25)
    assert torch.allclose(mixed, 0.25 * by_hand + 0.75 * plain, atol=1e-6)


def tiny_split(tokenizer) -> EncodedSplit:
    texts = [f"The {w} sat on the mat number {i}." for i, w in enumerate(["cat", "dog", "man", "bird"] * 4)]
    labels = np.array([i % 2 for i in range(len(texts))], dtype=np.int64)
    return EncodedSplit(tokenizer(texts, truncation=True, max_length=16)["input_ids"], labels, texts)


def trained_state(split: EncodedSplit, config: TrainConfig, pad_id: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    source = resolve_backbone("bundled")
    model_config = AutoConfig.from_pretrained(source, num_labels=2)
    model = build_classifier(source, model_config, "mean")
    train_loop(model, split, split, config, pad_id, lambda epoch, metrics: None)
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_alpha_0_trains_exactly_like_plain_training_and_a_teacher_changes_it():
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("bundled"))
    split = tiny_split(tokenizer)
    recipe = dict(epochs=1, batch_size=8, learning_rate=1e-4, max_seq_length=16, seed=1, patience=1,
                  warmup_ratio=0.0, weight_decay=0.0, precision="fp32")  # fmt: skip
    plain = trained_state(split, TrainConfig(**recipe), tokenizer.pad_token_id)
    teacher_logits = np.random.default_rng(0).normal(size=(len(split), 2)).astype(np.float32) * 4
    with_teacher = EncodedSplit(split.input_ids, split.labels, split.texts, teacher_logits=teacher_logits)
    at_zero = trained_state(
        with_teacher, TrainConfig(**recipe, loss_fn=distillation_loss_fn(2.0, 0.0)), tokenizer.pad_token_id
    )
    assert all(torch.equal(plain[name], at_zero[name]) for name in plain)
    distilled = trained_state(
        with_teacher, TrainConfig(**recipe, loss_fn=distillation_loss_fn(2.0, 0.9)), tokenizer.pad_token_id
    )
    assert not torch.equal(plain["classifier.weight"], distilled["classifier.weight"])


def test_no_teacher_leaves_the_training_as_it_was():
    prepared = object()  # attach_teacher must not even look at it
    args = argparse.Namespace(teacher="none")
    assert attach_teacher(prepared, args, fit=None) is prepared


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--distill-alpha", "1.5", "distill_alpha must be in"),
        ("--distill-temperature", "0", "distill_temperature must be > 0"),
        ("--teacher-epochs", "0", "teacher_epochs must be >= 1"),
    ],
)
def test_bad_distillation_parameters_fail_before_heavy_work(tracking_store, flag, value, message):
    with pytest.raises(SystemExit, match=message):
        train.main([*train_args(), "--registered-model-name", "m", flag, value])


@pytest.fixture
def small_teacher(tmp_path) -> Path:
    """A teacher unlike the student: the bundled backbone cut to 2 layers, saved as a local HF folder."""
    source = resolve_backbone("bundled")
    folder = tmp_path / "teacher"
    AutoModel.from_pretrained(source, num_hidden_layers=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def teacher_runs(experiment_id: str) -> list:
    return mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string=f"tags.`{TEACHER_KEY_TAG}` != ''", output_format="list"
    )


def test_a_distilled_run_records_its_teacher_reuses_it_and_ships_only_the_student(
    data_run,  # noqa: F811
    tracking_store,
    small_teacher,
):
    teacher = ["--teacher", str(small_teacher), "--teacher-epochs", "1", "--teacher-learning-rate", "1e-4"]
    train.main([*train_args(), "--registered-model-name", "student", *teacher])
    student_run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert student_run.info.status == "FINISHED"
    [teacher_run] = teacher_runs(tracking_store)
    assert teacher_run.data.tags["mlflow.parentRunId"] == student_run.info.run_id
    assert student_run.data.tags[TEACHER_RUN_TAG] == teacher_run.info.run_id
    assert student_run.data.tags[TEACHER_REUSED_TAG] == "false"
    assert {
        "best_val_mcc",
        "teacher_train_seconds",
        "teacher_parameters",
        "val_mcc",
        "teacher_test_mcc",
    } <= set(teacher_run.data.metrics)
    assert {"teacher_best_val_mcc", "teacher_test_mcc"} <= set(student_run.data.metrics)

    # Only the student ships: the registered model's files are the plain ones and its graph holds the
    # student's parameter count (22.7M; with the 2-layer teacher's ~15M beside it, it would be ~38M).
    version = mlflow.MlflowClient().get_model_version_by_alias("student", "challenger")
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/student/{version.version}"))
    files = {p.relative_to(model_dir / "artifacts").as_posix() for p in (model_dir / "artifacts").rglob("*")}
    assert files == {"model.onnx", "tokenizer.json", "serving_config.json"}
    assert not [p for p in model_dir.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".npz")]
    graph = onnx.load(str(model_dir / "artifacts" / "model.onnx")).graph
    onnx_parameters = sum(int(np.prod(init.dims)) for init in graph.initializer)
    student_config = AutoConfig.from_pretrained(resolve_backbone("bundled"), num_labels=2)
    student_parameters = sum(p.numel() for p in build_classifier(
        resolve_backbone("bundled"), student_config, "mean").parameters())  # fmt: skip
    assert onnx_parameters == pytest.approx(student_parameters, rel=0.01)

    # The same teacher, data and recipe: the next run reuses the teacher's logits, trains no teacher.
    args = train.parse_args([*train_args(), "--registered-model-name", "student", *teacher])
    with mlflow.start_run() as second:
        prepared = train.prepare(args)
        distilled = attach_teacher(prepared, args, fit=None)  # fit=None: training a teacher would fail
    assert len(teacher_runs(tracking_store)) == 1
    tags = mlflow.get_run(second.info.run_id).data.tags
    assert (tags[TEACHER_REUSED_TAG], tags[TEACHER_RUN_TAG]) == ("true", teacher_run.info.run_id)
    logged = np.load(
        mlflow.artifacts.download_artifacts(run_id=teacher_run.info.run_id, artifact_path=LOGITS_ARTIFACT)
    )["train"]
    np.testing.assert_array_equal(distilled.train_split.teacher_logits, logged)
    assert distilled.loss_fn is not None and prepared.train_split.teacher_logits is None


def test_the_teacher_key_changes_with_the_data_the_teacher_and_its_recipe_only():
    def prepared(labels, few=False):
        split = EncodedSplit([[1, 2]] * 3, np.array(labels), ["a b", "c d", "e f"])
        label_set = argparse.Namespace(names=["no", "yes"])
        return argparse.Namespace(
            train_split=split, validation_split=split, label_set=label_set, precision="fp32", few_shot=few
        )

    args = train.parse_args([*train_args(), "--registered-model-name", "m", "--teacher", "mpnet"])
    key = teacher_key(args, "weights-a", prepared([0, 1, 0]))
    assert key == teacher_key(args, "weights-a", prepared([0, 1, 0]))
    assert key != teacher_key(args, "weights-b", prepared([0, 1, 0]))  # another teacher
    assert key != teacher_key(args, "weights-a", prepared([0, 1, 1]))  # a changed label
    assert key != teacher_key(args, "weights-a", prepared([0, 1, 0], few=True))  # a few-shot teacher
    args.distill_alpha = 0.9  # the student's recipe is not the teacher's
    assert key == teacher_key(args, "weights-a", prepared([0, 1, 0]))
    args.teacher_epochs = 5
    assert key != teacher_key(args, "weights-a", prepared([0, 1, 0]))


def test_a_teacher_with_forced_few_shot_is_refused_before_heavy_work(tracking_store):
    with pytest.raises(SystemExit, match="few_shot=true trains a contrastive few-label model"):
        train.main(
            [*train_args(), "--registered-model-name", "m", "--teacher", "mpnet", "--few-shot", "true"]
        )


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"few_shot": True}, "this data trains few-shot"),
        ({"multi_label": True}, "several labels per text"),
        ({"token_type_ids": [[0, 0, 1]]}, "sentence-pair task"),
    ],
)
def test_tasks_distillation_does_not_train_are_refused_before_the_teacher_loads(task, message):
    split = EncodedSplit([[1, 2, 3]], np.zeros(1, np.int64), ["a b"], task.get("token_type_ids"))
    prepared = argparse.Namespace(
        few_shot=task.get("few_shot", False), multi_label=task.get("multi_label", False), train_split=split
    )
    # A teacher that cannot load and fit=None: the refusal must come before either is touched.
    args = argparse.Namespace(teacher="/no/such/teacher", few_shot_threshold=32)
    with pytest.raises(StepInputError, match=message):
        attach_teacher(prepared, args, fit=None)


def test_the_teacher_labels_the_unlabelled_text_and_a_reused_teacher_labels_it_from_its_logged_weights(
    tracking_store, small_teacher, tmp_path, capsys
):
    """preprocess's `unlabelled` text joins the student's training rows with the teacher's soft targets and
    its most likely class as the label; the teacher's weights are logged (never registered), so a later run
    with the same teacher labels new text without training it again."""
    texts = [f"An unlabelled sentence number {i}." for i in range(12)]
    (tmp_path / "captured.txt").write_text("\n".join(texts))
    preprocess.main(step_argv(val_fraction=0.05, seed=1, unlabelled=str(tmp_path / "captured.txt")))
    data_run_id = mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0].info.run_id
    teacher = ["--teacher", str(small_teacher), "--teacher-epochs", "1", "--teacher-learning-rate", "1e-4"]
    argv = [*train_args(), "--registered-model-name", "student", "--data-run-id", data_run_id, *teacher]
    train.main(argv)
    student_run = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert student_run.info.status == "FINISHED"
    assert (student_run.data.tags["training_rows"], student_run.data.tags["training_unlabelled_rows"]) == (
        "64",
        "12",
    )
    assert student_run.data.metrics["teacher_unlabelled_rows"] == 12
    # The teacher's passes show progress (tens of thousands of texts take minutes).
    shown = capsys.readouterr().err
    assert "teacher soft targets" in shown and "teacher labelling unlabelled text" in shown
    [teacher_run] = teacher_runs(tracking_store)
    weights = {a.path for a in mlflow.MlflowClient().list_artifacts(teacher_run.info.run_id, "teacher/model")}
    assert "teacher/model/model.safetensors" in weights

    # Reused: fit=None (a teacher trained again would fail); the logged weights give the logged logits.
    args = train.parse_args(argv)
    with mlflow.start_run():
        prepared = train.prepare(args)
        distilled = attach_teacher(prepared, args, fit=None)
        own = teacher_prepared(prepared, str(small_teacher), args.max_seq_length)
        model = load_teacher_model(teacher_run, own)
    split = distilled.train_split
    assert len(split) == 64 + 12 and split.texts[64:] == texts
    np.testing.assert_array_equal(split.labels[64:], split.teacher_logits[64:].argmax(axis=1))
    logged = np.load(
        mlflow.artifacts.download_artifacts(run_id=teacher_run.info.run_id, artifact_path=LOGITS_ARTIFACT)
    )["train"]
    np.testing.assert_array_equal(split.teacher_logits[:64], logged)
    again, _ = predict(model, own.train_split, 32, own.tokenizer.pad_token_id)
    np.testing.assert_allclose(again, logged, atol=2e-2)
    assert len(teacher_runs(tracking_store)) == 1


def test_few_label_data_with_unlabelled_text_gets_a_few_shot_teacher_and_a_fine_tuned_student(
    tracking_store, small_teacher, tmp_path, monkeypatch
):
    """Few-label data refuses a teacher on its own rows, but with unlabelled text the teacher is trained
    few-shot (SetFit's recipe on the teacher; its contrastive phase skipped here, test_few_shot.py runs it),
    labels the text, and the student fine-tunes on all of it; the teacher's weights load as the few-shot
    classifier they are."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(few_shot, "contrastive_fit", skipped_contrastive_fit)
    topics = ("billing", "login", "shipping")
    rows = [(f"a {topic} question number {i}", topic) for topic in topics for i in range(8)]
    pd.DataFrame(rows, columns=["text", "topic"]).to_csv(tmp_path / "train.csv", index=False)
    test = [(f"another {topic} question", topic) for topic in topics]
    pd.DataFrame(test, columns=["text", "topic"]).to_csv(tmp_path / "test.csv", index=False)
    texts = [f"something about {topic} {i}" for topic in topics for i in range(7)]
    (tmp_path / "pool.txt").write_text("\n".join(texts))
    preprocess.main(
        step_argv(
            dataset=str(tmp_path),
            text_column="text",
            label_column="topic",
            val_fraction=0.3,
            unlabelled=str(tmp_path / "pool.txt"),
        )
    )
    data_run_id = mlflow.search_runs(experiment_ids=[tracking_store], output_format="list")[0].info.run_id
    teacher = ["--teacher", str(small_teacher), "--few-shot-iterations", "1"]
    CONTRASTIVE_ROWS.clear()
    train.main([*train_args(), "--registered-model-name", "few", "--data-run-id", data_run_id, *teacher])
    # The few-shot teacher trains once, on the training rows (no refit on the validation rows: it would
    # double the teacher's cost for nothing measurable, few_shot.py).
    assert len(CONTRASTIVE_ROWS) == 1 and CONTRASTIVE_ROWS[0] < 24
    student = mlflow.search_runs(
        experiment_ids=[tracking_store], filter_string=f"tags.`{STEP_TAG}` = 'train'", output_format="list"
    )[0]
    assert student.info.status == "FINISHED"
    assert student.data.tags["training_mode"] == "fine_tune"
    labelled = int(student.data.tags["training_rows"])
    assert labelled < 24 and student.data.tags["training_unlabelled_rows"] == "21"
    [teacher_run] = teacher_runs(tracking_store)
    assert teacher_run.data.tags[TEACHER_KIND_TAG] == "few_shot"
    assert "val_mcc" in teacher_run.data.metrics and "teacher_best_val_mcc" in student.data.metrics
    # The few-shot teacher's head was self-trained on the text before it labelled it (few_shot.py).
    assert 1 <= student.data.metrics["teacher_self_training_rounds"] <= few_shot.SELF_TRAINING_MAX_ROUNDS
    assert 0 <= student.data.metrics["teacher_unlabelled_relabelled"] <= 1

    args = train.parse_args(
        [*train_args(), "--registered-model-name", "few", "--data-run-id", data_run_id, *teacher]
    )
    with mlflow.start_run():
        prepared = train.prepare(args)
        assert prepared.few_shot
        retrained = lambda *_: pytest.fail("the teacher was trained again")  # noqa: E731
        distilled = attach_teacher(prepared, args, fit=None, fit_few=retrained)
        model = load_teacher_model(teacher_run, teacher_prepared(prepared, str(small_teacher), 32))
    assert isinstance(model, few_shot.FewShotClassifier) and not distilled.few_shot
    assert not distilled.select_epoch  # its one validation row per class cannot pick an epoch
    assert len(distilled.train_split) == labelled + 21
    # The text's labels are the self-trained head's: its log-probabilities, the student's soft targets.
    soft = distilled.train_split.teacher_logits[labelled:]
    np.testing.assert_allclose(np.exp(soft).sum(axis=1), 1, atol=1e-4)
    np.testing.assert_array_equal(distilled.train_split.labels[labelled:], soft.argmax(axis=1))


def test_few_label_data_without_a_validation_split_refuses_a_teacher_with_the_fix():
    split = EncodedSplit([[1, 2, 3]], np.zeros(1, np.int64), ["a b"])
    prepared = argparse.Namespace(
        few_shot=True,
        multi_label=False,
        train_split=split,
        validation_split=EncodedSplit([], np.zeros(0), []),
    )
    args = argparse.Namespace(teacher="/no/such/teacher", few_shot_threshold=32)
    with pytest.raises(StepInputError, match="needs validation rows to score it on"):
        refuse_unsupported(prepared, args, unlabelled=True)
