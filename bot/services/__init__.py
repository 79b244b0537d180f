"""Use cases: what shipmate does for each intent and job, over the adapters."""
