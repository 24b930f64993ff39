"""Environment wrappers: the gymnasium-native Mario env, reward modes, frame skip, episode stats."""
