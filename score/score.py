"""Batch scoring on Apache Spark with the registered text model (`mlflow run score -P input= -P output=`).

The driver reads the input files (spark_io), hands the sentences to Spark as a DataFrame, and scores them
with `mlflow.pyfunc.spark_udf` (env_manager local: the executors' own Python, the score image's, loads the
pyfunc; ONNX Runtime with one thread per task, so the tasks, not ORT, use the cores). The scored rows come
back to the driver, which writes <output>/scores.parquet (text, class, name, probabilities; in the input's
order): the executors need no file system in common with the driver, so local[*] and a standalone cluster
on other machines behave the same. The run logs rows (per file and per class), seconds, sentences/s and a
sample table.
"""

import argparse
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentclf.contract import DEFAULT_CHAMPION_URI, ModelRef, parse_model_uri
from sentclf.tracking import StepInputError, record_inputs, step_run

from spark_io import TEXT_COLUMN, TEXT_PAIR_COLUMN, deliver, host_path, read_inputs

logger = logging.getLogger("score")

RESULT_TYPE = "struct<class: bigint, name: string, probabilities: array<float>>"
OUTPUT_FILE = "scores.parquet"
SAMPLE_ROWS = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", default=DEFAULT_CHAMPION_URI)
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--text-column", default="auto")
    parser.add_argument("--partitions", type=int, default=0)
    parser.add_argument("--text-pair-column", default="none", help="a sentence-pair model's second text")
    args = parser.parse_args(argv)
    name = args.text_pair_column.strip()
    args.text_pair = None if not name or name.lower() == "none" else name
    return args


def resolve_model(uri: str) -> tuple[str, str]:
    """(name, version) of a models:/ URI, or a clear error."""
    try:
        ref = parse_model_uri(uri)
    except ValueError as error:
        raise StepInputError(f"model={error}") from None
    client = mlflow.MlflowClient()
    try:
        if ref.alias:
            version = client.get_model_version_by_alias(ref.name, ref.alias).version
        else:
            version = client.get_model_version(ref.name, ref.version).version
    except mlflow.exceptions.MlflowException as error:
        raise StepInputError(f"model={uri}: no such version ({error.message.splitlines()[0]})") from None
    return ref.name, str(version)


def spark_session(master: str, app_name: str):
    from pyspark.sql import SparkSession

    # A container's hostname resolves nowhere (no bridge network here): Spark binds and names loopback.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("SPARK_LOCAL_HOSTNAME", "localhost")
    # The executors' ORT sessions: one thread each, so N task slots keep N cores busy, not oversubscribed.
    os.environ.setdefault("SENTCLF_ORT_THREADS", "1")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Executors on one machine but in containers of their own share no disk: shuffle blocks go over
        # the network, never read from a "host-local" directory another executor wrote.
        .config("spark.shuffle.readHostLocalDisk", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.executorEnv.SENTCLF_ORT_THREADS", os.environ["SENTCLF_ORT_THREADS"])
        .config("spark.executorEnv.TOKENIZERS_PARALLELISM", "false")
        .config("spark.driver.memory", os.environ.get("SENTCLF_SPARK_DRIVER_MEMORY", "2g"))
    )
    return builder.getOrCreate()


def score_frame(spark, texts: pd.DataFrame, model_uri: str, partitions: int) -> tuple[pd.DataFrame, dict]:
    """The sentences scored on Spark: text, class, name, probabilities; and how it went."""
    from pyspark.sql import functions as F

    slots = spark.sparkContext.defaultParallelism
    partitions = partitions or slots
    # Each row's place in the input, so the output keeps the input's order whatever the partitioning.
    # A sentence-pair model's pyfunc takes its second column by position (spark_udf names the columns
    # after the model's signature: text, text_pair).
    columns = [TEXT_COLUMN] + ([TEXT_PAIR_COLUMN] if TEXT_PAIR_COLUMN in texts.columns else [])
    numbered = texts[columns].assign(_row=range(len(texts)))
    frame = spark.createDataFrame(numbered)
    # createDataFrame already cuts a pandas frame into one even slice per task slot; a repartition to the
    # same count would only add a shuffle of every row.
    if frame.rdd.getNumPartitions() != partitions:
        frame = frame.repartition(partitions)
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE, env_manager="local")
    started = time.perf_counter()
    scored = (
        frame.withColumn("prediction", predict(*(F.col(name) for name in columns)))
        .select(
            "_row",
            *columns,
            F.col("prediction.class").alias("class"),
            F.col("prediction.name").alias("name"),
            F.col("prediction.probabilities").alias("probabilities"),
        )
        .toPandas()
    )
    seconds = time.perf_counter() - started
    scored = scored.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    return scored, {"task_slots": slots, "partitions": partitions, "seconds": seconds}


def write_output(scored: pd.DataFrame, output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sentclf-score-") as tmp:
        path = Path(tmp) / OUTPUT_FILE
        pair = [(TEXT_PAIR_COLUMN, pa.string())] if TEXT_PAIR_COLUMN in scored.columns else []
        schema = pa.schema(
            [
                ("text", pa.string()),
                *pair,
                ("class", pa.int64()),
                ("name", pa.string()),
                ("probabilities", pa.list_(pa.float32())),
            ]
        )
        table = pa.Table.from_pandas(scored, schema=schema, preserve_index=False)
        pq.write_table(table, path)
        deliver({OUTPUT_FILE: path}, output)


def run(args: argparse.Namespace) -> None:
    name, version = resolve_model(args.model)
    model_uri = ModelRef(name, version).uri
    output = host_path(args.output)
    record_inputs(model_version=version, model_uri=model_uri, output=str(output))
    texts, rows_per_file = read_inputs(args.input, args.text_column, args.text_pair)
    logger.info(
        "%d sentences from %d file(s); scoring with %s on %s",
        len(texts),
        len(rows_per_file),
        model_uri,
        args.spark_master,
    )
    spark = spark_session(args.spark_master, f"sentclf-score-{mlflow.active_run().info.run_id[:8]}")
    try:
        scored, how = score_frame(spark, texts, model_uri, args.partitions)
        # The block managers Spark knows: the driver's, plus one per executor on a cluster.
        managers = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
        executors = managers if args.spark_master.startswith("local") else managers - 1
    finally:
        spark.stop()
    write_output(scored, output)
    per_class = scored["name"].value_counts()
    mlflow.log_metrics(
        {
            "rows": len(scored),
            "input_files": len(rows_per_file),
            "seconds": how["seconds"],
            "sentences_per_second": len(scored) / how["seconds"],
            "task_slots": how["task_slots"],
            "partitions": how["partitions"],
            "executors": max(executors, 1),
        }
        | {f"rows_class_{re.sub(r'[^0-9A-Za-z_.-]+', '_', str(k))}": int(v) for k, v in per_class.items()}
    )
    mlflow.log_dict(rows_per_file, "score/rows_per_file.json")
    sample = scored.head(SAMPLE_ROWS).assign(
        probabilities=lambda f: f["probabilities"].map(lambda p: [round(float(x), 6) for x in p])
    )
    mlflow.log_table(sample, "score/sample.json")
    logger.info(
        "scored %d sentences in %.1fs (%.0f sentences/s, %d task slots) -> %s",
        len(scored), how["seconds"], len(scored) / how["seconds"], how["task_slots"], output / OUTPUT_FILE,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with step_run("score"):
        run(args)


if __name__ == "__main__":
    main()
