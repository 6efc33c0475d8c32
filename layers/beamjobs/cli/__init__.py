"""The `beamjobs` command: serve, connect, mirror and the jobs commands."""
