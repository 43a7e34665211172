//! Integration tests: one binary so the AWS SDK links once.
