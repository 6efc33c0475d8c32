"""The domain: a job's rules and records. No I/O: no AWS, gRPC or web library."""
