"""One scheduled night around `make run` (scripts/retrain.sh takes the lock, then hands over to this):

- attempts: a failure the conductor reports as transient (conductor.outcome: the Docker engine not
  answering, the store locked, a step container killed from outside) is tried again, up to RETRAIN_RETRIES
  (2) more times, after RETRAIN_BACKOFF seconds (60), doubled each time; each attempt is in the log. A
  permanent failure (bad data, a failing step or code error) is not retried. A failed gate is no failure.
- the time limit: past RETRAIN_TIMEOUT (4h; `90m`, `20s`, `1h30m` or seconds) the pipeline gets SIGTERM in
  its process group, which cancels the running step and removes its containers (nothing is registered or
  promoted); the night ends 124.
- the summary line (the log's last line, `retrain <time>: exit <status>: <summary> (attempt i of n)`), the
  `retrain-latest.log` link, and old logs pruned to RETRAIN_KEEP_LOGS.
- notifications (ops.notify): a failed, timed-out or cancelled night always, a promotion always, a kept
  or unchanged night only with RETRAIN_NOTIFY_ON=all; they say how many scheduled nights were missed.
- live promotion, with RETRAIN_LIVE_FEEDBACK (the folder of labels that came back) and RETRAIN_TRAFFIC (the
  server's capture folder): before the pipeline (which may register a new challenger), `python -m
  ops.promote_live` judges the champion and the challenger on the labelled live traffic and moves
  `champion` when the paired comparison passes the gate (RETRAIN_LIVE_MIN_LABELS, default 200, labelled
  requests at least). Its summary ends the night's line (`; live: ...`), each version's live figures go
  into the notification, and a live promotion or a failed live step is always notified. It runs on a night
  RETRAIN_WHEN skips too (scripts/retrain.sh hands the skip over with --skipped).

`python -m ops.nightly status` is `make retrain-status` (ops.schedule).
"""

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conductor.outcome import ENGINE_UNREACHABLE, SUMMARY_FILE_ENV, TRANSIENT
from ops import notify, schedule
from sentclf.contract import DEFAULT_MODEL_NAME, GATE_KEPT, GATE_PROMOTED

logger = logging.getLogger("retrain")

REPO = Path(__file__).resolve().parent.parent
TIMED_OUT = 124
CANCELLED = 143
# After SIGTERM, how long the pipeline gets to cancel its step (the conductor's own grace is 20 s).
STOP_GRACE_S = 90.0
LOG_TAIL_LINES = 40
LIVE_FEEDBACK_ENV = "RETRAIN_LIVE_FEEDBACK"
LIVE_MIN_LABELS_ENV = "RETRAIN_LIVE_MIN_LABELS"
TRAFFIC_ENV = "RETRAIN_TRAFFIC"
# Test hook: the first attempt talks to this engine instead (a socket nothing answers on: an engine that
# is down for the first attempt only), without stopping the machine's real engine.
FIRST_ATTEMPT_DOCKER_HOST_ENV = "SENTCLF_TEST_FIRST_ATTEMPT_DOCKER_HOST"


def duration_s(text: str) -> float:
    """`4h`, `90m`, `20s`, `1h30m` or plain seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (e.g. 4h, 90m, 20s, 1h30m, 3600)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass
class Settings:
    retries: int
    timeout_s: float
    backoff_s: float
    notify_on: str
    keep_logs: int

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        notify_on = environ.get(notify.NOTIFY_ON_ENV, "changes") or "changes"
        if notify_on not in ("changes", "all"):
            raise ValueError(f"{notify.NOTIFY_ON_ENV} must be `all` or `changes`, got {notify_on!r}")
        return cls(
            retries=int(environ.get("RETRAIN_RETRIES", "2")),
            timeout_s=duration_s(environ.get("RETRAIN_TIMEOUT", "4h")),
            backoff_s=duration_s(environ.get("RETRAIN_BACKOFF", "60")),
            notify_on=notify_on,
            keep_logs=int(environ.get("RETRAIN_KEEP_LOGS", "30")),
        )


@dataclass
class Attempt:
    status: int
    summary: str
    record: dict
    seconds: float

    @property
    def kind(self) -> str:
        return self.record.get("kind", "")


class Night:
    def __init__(self, args: list[str], log: Path, stamp: str, settings: Settings) -> None:
        self.args, self.log, self.stamp, self.settings = args, log, stamp, settings
        self.started = time.monotonic()
        self.deadline = self.started + settings.timeout_s
        self.cancel_signal: int | None = None
        self.timed_out = False

    def environment(self, attempt: int, summary_file: str) -> dict[str, str]:
        """The pipeline's environment: never the notification URLs (they are secrets)."""
        env = {k: v for k, v in os.environ.items() if k not in (notify.NOTIFY_ENV, notify.NOTIFY_FILE_ENV)}
        env[SUMMARY_FILE_ENV] = summary_file
        hook = env.pop(FIRST_ATTEMPT_DOCKER_HOST_ENV, "")
        if hook and attempt == 1:
            env["DOCKER_HOST"] = hook
        return env

    def attempt(self, number: int) -> Attempt:
        fd, summary_file = tempfile.mkstemp(prefix="sentclf-retrain-summary-")
        os.close(fd)
        env = self.environment(number, summary_file)
        started = time.monotonic()
        try:
            with self.log.open("a") as out:
                process = subprocess.Popen(
                    ["make", "--no-print-directory", "run", f"ARGS={' '.join(self.args)}"],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: SIGTERM to it is the clean cancel
                )
                status = self.wait(process)
            lines = Path(summary_file).read_text().splitlines()
        finally:
            Path(summary_file).unlink(missing_ok=True)
        summary = lines[0] if lines else "failed before the pipeline started (see above)"
        record = {}
        with contextlib.suppress(IndexError, ValueError):
            record = json.loads(lines[1])
        if status not in (0, TIMED_OUT, CANCELLED) and not record.get("kind") and not engine_answers(env):
            record["kind"] = ENGINE_UNREACHABLE  # make failed before the conductor could say so
        return Attempt(status, summary, record, time.monotonic() - started)

    def wait(self, process: subprocess.Popen) -> int:
        while True:
            try:
                return process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if self.cancel_signal is not None or time.monotonic() > self.deadline:
                self.timed_out = self.cancel_signal is None
                why = "the time limit" if self.timed_out else signal.Signals(self.cancel_signal).name
                logger.warning("%s reached: cancelling the pipeline (SIGTERM to its process group)", why)
                return self.stop(process)

    def stop(self, process: subprocess.Popen) -> int:
        """SIGTERM to the pipeline's process group; the conductor in it cancels the running step (its
        containers stopped, its run KILLED). make exits at once: what counts is the whole group gone."""
        stopping = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        while group_alive(process.pid) and time.monotonic() - stopping < STOP_GRACE_S:
            time.sleep(0.2)
            process.poll()
        if group_alive(process.pid):
            logger.warning("the pipeline did not stop within %.0fs: killing its process group", STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        logger.info("pipeline stopped %.1fs after the cancel", time.monotonic() - stopping)
        return TIMED_OUT if self.timed_out else CANCELLED

    def run(self) -> tuple[int, str, dict]:
        total = self.settings.retries + 1
        backoff = self.settings.backoff_s
        for number in range(1, total + 1):
            logger.info("attempt %d of %d started", number, total)
            result = self.attempt(number)
            logger.info(
                "attempt %d of %d ended: exit %d after %.1fs%s: %s",
                number,
                total,
                result.status,
                result.seconds,
                f" ({result.kind})" if result.kind else "",
                result.summary,
            )
            note = f" (attempt {number} of {total})"
            if self.timed_out:
                limit = os.environ.get("RETRAIN_TIMEOUT", "4h")
                step = result.record.get("step")
                summary = (
                    f"timed out after {limit} (RETRAIN_TIMEOUT){f' in step {step}' if step else ''}: "
                    "the pipeline was cancelled, nothing was registered or promoted"
                )
                return TIMED_OUT, summary + note, result.record | {"outcome": "timed out"}
            if self.cancel_signal is not None:
                return CANCELLED, "cancelled" + note, result.record | {"outcome": "cancelled"}
            if result.status == 0:
                return 0, result.summary + note, result.record
            transient = result.kind in TRANSIENT
            left = self.deadline - time.monotonic()
            if not transient or number == total or left <= backoff:
                why = "permanent, not retried" if not transient else "no attempts or time left"
                logger.info("attempt %d failed (%s: %s)", number, result.kind or "unknown", why)
                return result.status, result.summary + note, result.record | {"outcome": "failed"}
            logger.warning(
                "attempt %d failed (%s, transient): retrying in %.0fs", number, result.kind, backoff
            )
            self.sleep(backoff)
            if self.cancel_signal is not None:
                return CANCELLED, "cancelled" + note, result.record | {"outcome": "cancelled"}
            backoff *= 2
        raise AssertionError("unreachable")

    def sleep(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while self.cancel_signal is None and time.monotonic() < until:
            time.sleep(0.2)


@dataclass
class Live:
    """What the live promotion said: its one-line summary and each version's live figures."""

    promoted: bool
    summary: str
    lines: list[str]
    failed: bool = False


def live_promotion(args: list[str], log: Path, environ=os.environ) -> Live | None:
    """`python -m ops.promote_live` on RETRAIN_TRAFFIC and RETRAIN_LIVE_FEEDBACK for the pipeline's
    registered model, its output in the night's log; None when no feedback folder is set."""
    feedback = environ.get(LIVE_FEEDBACK_ENV, "")
    if not feedback:
        return None
    traffic = environ.get(TRAFFIC_ENV, "")
    if not traffic:
        return Live(False, f"{LIVE_FEEDBACK_ENV} needs {TRAFFIC_ENV}, the server's capture folder", [], True)
    from ops.retrain_when import pipeline_parameter

    model = pipeline_parameter(args, "registered_model_name", DEFAULT_MODEL_NAME)
    fd, summary_file = tempfile.mkstemp(prefix="sentclf-live-summary-")
    os.close(fd)
    command = [sys.executable, "-m", "ops.promote_live", "--traffic", traffic, "--feedback", feedback]
    command += ["--model", model, "--summary-file", summary_file]
    if environ.get(LIVE_MIN_LABELS_ENV):
        command += ["--min-labels", environ[LIVE_MIN_LABELS_ENV]]
    env = {k: v for k, v in environ.items() if k not in (notify.NOTIFY_ENV, notify.NOTIFY_FILE_ENV)}
    logger.info("live promotion: %s", " ".join(command[1:]))
    try:
        with log.open("a") as out:
            status = subprocess.run(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            ).returncode
        text = Path(summary_file).read_text()
    finally:
        Path(summary_file).unlink(missing_ok=True)
    try:
        result = json.loads(text)
    except ValueError:
        result = None
    if status != 0 or not result:
        return Live(False, f"live promotion failed (exit {status}; see the log)", [], True)
    return Live(bool(result["promoted"]), result["summary"], list(result["lines"]))


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def engine_answers(env: dict[str, str]) -> bool:
    import docker

    try:
        docker.from_env(environment=env, timeout=10).ping()
    except Exception:  # noqa: BLE001
        return False
    return True


def finish(log: Path, line: str, keep: int) -> None:
    """The log's last line, the latest link, old logs pruned (names sort by time)."""
    with log.open("a") as out:
        out.write(line + "\n")
    latest = log.parent / "retrain-latest.log"
    with contextlib.suppress(FileNotFoundError):
        latest.unlink()
    latest.symlink_to(log.name)
    for old in sorted(log.parent.glob("retrain-2*.log"))[:-keep]:
        old.unlink(missing_ok=True)


def should_notify(status: int, record: dict, settings: Settings, live: Live | None = None) -> bool:
    live_news = live is not None and (live.promoted or live.failed)
    return status != 0 or record.get("outcome") == GATE_PROMOTED or settings.notify_on == "all" or live_news


def event_of(status: int, record: dict) -> str:
    if status == 0:
        if record.get("outcome") == GATE_KEPT and record.get("reused") == 4:
            return "unchanged"
        return record.get("outcome", "finished")
    return record.get("outcome", "failed")


def message(
    line: str, status: int, record: dict, log: Path, missed: int, live: Live | None = None
) -> tuple[str, str]:
    event = event_of(status, record)
    if live is not None and live.promoted:
        event += ", champion promoted on live traffic"
    elif live is not None and live.failed:
        event += ", live promotion failed"
    title = f"sentclf retrain on {socket.gethostname()}: {event}"
    facts = [line]
    if live is not None and live.lines:
        facts += ["live traffic:", *(f"  {figures}" for figures in live.lines)]
    if step := record.get("step"):
        facts.append(f"failing step: {step}" if status else f"step: {step}")
    if kind := record.get("kind"):
        facts.append(f"kind: {kind}")
    if missed:
        facts.append(f"missed nights: {missed} scheduled night(s) before this one did not run")
    facts.append(f"log: {log}")
    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    if status:
        facts += ["", f"--- the log's last {len(tail)} lines ---", *tail]
    return title, "\n".join(facts)


def count_missed(log: Path) -> int:
    """Scheduled nights (the crontab entry of this checkout) that were due since the previous log."""
    try:
        entry = schedule.crontab_entry(REPO)
        if entry is None:
            return 0
        earlier = [p for p in schedule.night_logs(log.parent) if p != log and p.name < log.name]
        last = schedule.log_time(earlier[-1]) if earlier else None
        return schedule.missed_nights(entry.schedule, last, schedule.log_time(log) or schedule.now())
    except Exception as error:  # noqa: BLE001 - a miscount never stops a night
        logger.warning("could not count missed nights: %s", error)
        return 0


def run_night(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ops.nightly run")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--stamp", required=True)
    parser.add_argument("--skipped", default="", help="RETRAIN_WHEN skipped the pipeline: this is why")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    handler = logging.FileHandler(options.log)
    handler.setFormatter(logging.Formatter("%(asctime)s retrain: %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    args = [a for a in options.args if a != "--"]
    urls = notify.notification_urls(os.environ)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        logger.error("%s", error)
        line = f"retrain {options.stamp}: exit 2: failed: {error}"
        notify.send(urls, f"sentclf retrain on {socket.gethostname()}: failed", line)
        finish(options.log, line, 30)
        return 2
    missed = count_missed(options.log)
    if missed:
        logger.warning("%d scheduled night(s) were missed since the previous log", missed)
    logger.info(
        "settings: retries %d, time limit %.0fs, backoff %.0fs, notify on %s, %d notification URL(s)%s",
        settings.retries,
        settings.timeout_s,
        settings.backoff_s,
        settings.notify_on,
        len(urls),
        f" ({', '.join(notify.masked(u) for u in urls)})" if urls else "",
    )
    # Before the pipeline: a new version it registers takes the `challenger` alias from the one served.
    live = live_promotion(args, options.log)
    if live is not None:
        logger.info("live: %s", live.summary)
    if options.skipped:
        status, summary, record = 0, options.skipped, {"outcome": "skipped"}
    else:
        night = Night(args, options.log, options.stamp, settings)

        def cancel(signum: int, frame: object) -> None:
            night.cancel_signal = signum

        signal.signal(signal.SIGTERM, cancel)
        signal.signal(signal.SIGINT, cancel)
        status, summary, record = night.run()
    # Notified first, so that the summary line stays the log's last line.
    line = f"retrain {options.stamp}: exit {status}: {summary}" + (f"; live: {live.summary}" if live else "")
    if should_notify(status, record, settings, live):
        notify.send(urls, *message(line, status, record, options.log, missed, live))
    finish(options.log, line, settings.keep_logs)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_night(argv[1:])
    if argv[:1] == ["status"]:
        default = Path(os.environ.get("RETRAIN_LOG_DIR") or REPO / "logs")
        report, overdue = schedule.status(REPO, default)
        print(report)
        return 1 if overdue else 0
    print("usage: python -m ops.nightly run --log LOG --stamp STAMP -- ARGS... | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
