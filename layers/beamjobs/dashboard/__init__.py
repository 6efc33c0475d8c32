"""The web dashboard (beamjobs.dashboard.server) and its pages (static/)."""
