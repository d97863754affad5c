"""Ground truth and scoring: object tracks in 3D, questions with known answers, and metrics (accuracy, MRA)."""
