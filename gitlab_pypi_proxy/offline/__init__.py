"""What the command line does besides serving: prefetch (from lock files, packages or a whole
source), cache bundles, stats and verify. None of it imports the web app."""
