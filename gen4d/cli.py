"""The ``gen4d`` command (placeholder, replaced below)."""
def main(argv=None):
    return 0
