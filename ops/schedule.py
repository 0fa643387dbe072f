"""The retraining schedule as `make cron-install` left it (the crontab entry of this checkout), its logs,
the nights that were due and did not run, and `make retrain-status`."""

import datetime
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from croniter import croniter

MARKER = "# sentclf-retrain"
LOG_NAME = re.compile(r"retrain-(\d{8}T\d{6}Z)-\d+\.log$")
# A night counts as run when its log starts within this long after the time it was due.
START_GRACE = datetime.timedelta(minutes=5)


@dataclass
class Entry:
    schedule: str
    env: dict[str, str] = field(default_factory=dict)
    line: str = ""


def crontab_entry(repo: Path) -> Entry | None:
    """This checkout's entry in the user's crontab, or None."""
    if not shutil.which("crontab"):
        return None
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    marker = f"{MARKER} {repo}"
    for line in listed.stdout.splitlines():
        if line.rstrip().endswith(marker):
            return parse_entry(line[: line.rindex(MARKER)])
    return None


def parse_entry(line: str) -> Entry:
    words = shlex.split(line.replace("\\%", "%"))
    count = 1 if words[0].startswith("@") else 5
    schedule, rest = " ".join(words[:count]), words[count:]
    env = {}
    for word in rest:
        name, equals, value = word.partition("=")
        if not equals or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            break
        env[name] = value
    return Entry(schedule, env, line.strip())


def cron_running() -> bool:
    return subprocess.run(["pgrep", "-x", "cron"], capture_output=True, check=False).returncode == 0


def log_time(path: Path) -> datetime.datetime | None:
    match = LOG_NAME.search(path.name)
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


def night_logs(log_dir: Path) -> list[Path]:
    return sorted(p for p in log_dir.glob("retrain-2*.log") if log_time(p) is not None)


def now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()  # cron fires in the machine's local time


def due_times(schedule: str, after: datetime.datetime, until: datetime.datetime, limit: int = 1000) -> list:
    """The times the schedule was due in (after, until]."""
    times = []
    for due in croniter(schedule, after.astimezone(until.tzinfo)).all_next(datetime.datetime):
        if due > until or len(times) >= limit:
            break
        times.append(due)
    return times


def missed_nights(schedule: str, last_run: datetime.datetime | None, at: datetime.datetime) -> int:
    """Nights that were due after the last one ran and before `at`, less the one starting now."""
    if last_run is None:
        return 0
    return len(due_times(schedule, last_run, at - START_GRACE))


def last_summary(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("retrain ")]
    return lines[-1] if lines else "(no summary line: still running, or ended without one)"


def status(repo: Path, default_log_dir: Path) -> tuple[str, bool]:
    """(the report of `make retrain-status`, whether a night is overdue)."""
    entry = crontab_entry(repo)
    log_dir = Path(entry.env.get("RETRAIN_LOG_DIR", default_log_dir)) if entry else default_log_dir
    logs = night_logs(log_dir)
    at = now()
    lines, warnings = [], []
    if entry is None:
        lines.append(f"schedule: none (no crontab entry for {repo}; `make cron-install` adds one)")
    else:
        daemon = cron_running()
        lines.append(
            f"schedule: {entry.schedule} (crontab entry of {repo}; cron daemon "
            f"{'running' if daemon else 'NOT running'})"
        )
        if not daemon:
            warnings.append("no cron daemon runs, so no night will start: `make cron-install` starts one")
    if logs:
        last = logs[-1]
        lines.append(f"last night: {log_time(last):%Y-%m-%d %H:%M:%S} UTC ({last})")
        lines.append(f"  {last_summary(last)}")
    else:
        lines.append(f"last night: none (no retrain log in {log_dir})")
    if entry is not None:
        following = croniter(entry.schedule, at).get_next(datetime.datetime)
        lines.append(f"next due: {following:%Y-%m-%d %H:%M %Z}")
        previous = croniter(entry.schedule, at).get_prev(datetime.datetime)
        last_run = log_time(logs[-1]) if logs else None
        if at - previous > START_GRACE and (last_run is None or last_run < previous - START_GRACE):
            missed = missed_nights(entry.schedule, last_run, at + START_GRACE) if last_run else 0
            since = f"{last_run:%Y-%m-%d %H:%M UTC}" if last_run else "ever"
            warnings.append(
                f"overdue: the night due {previous:%Y-%m-%d %H:%M %Z} has no log"
                + (f" ({missed} night(s) missed since the last one, {since})" if missed else "")
            )
    lines += [f"WARNING: {warning}" for warning in warnings]
    return "\n".join(lines), bool(warnings)
