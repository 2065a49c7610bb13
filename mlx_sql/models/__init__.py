"""Model loading: hub ids and local folders through mlx-lm."""
