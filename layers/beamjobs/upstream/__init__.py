"""Upstream engines: a Beam Job API client, and the mirror that follows a job on one."""
