"""Beamjobs: a serverless Apache Beam Job Service. This package is the domain core (the Lambda
layer): job states, the job store, the blob store, executors and settings. It never imports
apache_beam; only the worker (beamjobs.worker) does."""
