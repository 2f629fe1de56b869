"""Mail stores (issue 10): configuration, failover and failback of qnMailHost."""
