"""The files of a set: the progress file, and the state folder beside it."""
