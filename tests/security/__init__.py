"""Security of the deployment: least-privilege broker users, and no credential in any output."""
