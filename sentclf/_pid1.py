"""Installed as `sitecustomize` in the step image (see Dockerfile): runs before anything else in every
Python process there.

A step runs as PID 1 of its container when MLflow starts it without `--init` (`mlflow run train` as
typed), and the kernel gives PID 1 no default action for SIGTERM: the signal is ignored. For the seconds a
step spends importing torch and MLflow, before sentclf.tracking.step_run installs its own handler, a
cancel would be lost and the step would go on to register a model. So PID 1 exits on SIGTERM from the
start; step_run replaces this handler once its run is open, and then ends the run KILLED.
"""

import os
import signal
import sys

if os.getpid() == 1:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
