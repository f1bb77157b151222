"""Where evals run: the executor protocol (base) and its backends."""
