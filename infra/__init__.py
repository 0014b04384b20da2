"""Deployment of beamsplitter: images, Dataflow, Flink on Kubernetes, schedules (see infra/README.md)."""
