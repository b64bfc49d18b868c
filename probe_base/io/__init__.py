"""Files: atomic writes, the .probe artifact, structure input and per-frame output."""
