"""Search: space files, the trial objective, and the Ray Tune x Optuna runner."""
