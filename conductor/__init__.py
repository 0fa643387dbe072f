"""The conductor: what runs on the host to drive the steps, and never inside one.

The pipeline (`pipeline`), its parameters read from the MLproject files (`parameters`), how a step is
launched (`backends`: `local_backend`, and `kube` for a cluster), the step cache, the one-pipeline lock,
the step image (`step_image`), server-image garbage collection (`image_gc`) and links into
the UI (`ui_links`). `main.py` is its entry. Steps import `sentclf` only;
nothing here is built into the step image or hashed into a step's cache key, so a change here reruns no
step.
"""
