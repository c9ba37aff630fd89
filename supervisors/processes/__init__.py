"""OS process care: process groups and sessions, liveness checks, the orphan reaper."""
