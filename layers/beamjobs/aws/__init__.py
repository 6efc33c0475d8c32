"""Adapters to AWS: DynamoDB, S3, Step Functions, Fargate, Lambda and STS."""
