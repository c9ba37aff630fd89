"""The supervision tree: the Supervisor actor, its jobs, children and policing,
and the tuning vocabulary (Policy, Backoff, hooks, child specs, config files)."""
