"""`make bench`: the performance figures, side by side with the anchors the issues name."""
