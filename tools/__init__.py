"""Host tools: commands a person runs on this machine that are not the pipeline.

`serve` (`make serve`: a registered version's server image in the foreground), `serving_manifests` (a
version's Kubernetes Deployment, Service, autoscaler and InferenceService), `tracking_users` (`make
tracking-user`: a login on the tracking server) and `tune` (the root MLproject's `tune` entry point: a
recipe search). They may use the conductor's parts (its backends, its step image, its settings); the
conductor, the steps and `sentclf` never import a tool.
"""
