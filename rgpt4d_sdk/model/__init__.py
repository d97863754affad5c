"""The NVILA-Lite / 4D-RGPT architecture, its checkpoint layout and preprocessing."""
