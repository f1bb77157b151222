"""What the tests share: a fake oaieval, real processes, servers and clusters."""
