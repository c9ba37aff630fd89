"""Resource accounting: the accountant actor, usage sampling, quotas per security level, adaptive limits."""
