"""Reading pipelines: what the control plane learns from a pipeline's proto."""
