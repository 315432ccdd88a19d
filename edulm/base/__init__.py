"""The small shared pieces every layer uses: errors, atomic files, locks, logs, the cache folder, hub access, devices, the run directory's names, the metrics CSV, memory accounting."""
