"""AnomalyDINO for autovi: cosine nearest-neighbour distances of test patches to every reference patch."""
