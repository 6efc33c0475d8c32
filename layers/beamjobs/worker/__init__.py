"""The worker: runs one job's pipeline with Beam's portable FnApiRunner. The only part of
Beamjobs that imports apache_beam (but its channel client, `channel`, which the local
executor shares)."""
