"""VITS-fast-fine-tuning's text cleaners, reproduced: each language's text to the symbols its voices were
trained on."""
