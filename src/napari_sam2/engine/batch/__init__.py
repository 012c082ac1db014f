"""Headless batch work: track a stack from a prompt file, track many stacks (locally or on dask.distributed), their manifests and report, and precomputing features."""
