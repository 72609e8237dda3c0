"""What every AWS component shares (the aws-secretsmanager store, the sns, eventbridge and ecs notifiers, the
aws-iam-key plugin): `session` builds boto3 clients from the connection options they all accept, `errors` turns
botocore's exceptions into rotator errors. Nothing is imported here, so the Lambda's cold start loads only what
the store uses."""
