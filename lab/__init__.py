"""The failure lab: reproduce each classic failure of at-least-once
messaging on demand, then show it solved (``python -m lab``)."""
