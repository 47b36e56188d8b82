"""IDH Pseudocolor: glioma IDH status from pseudo-colored MRI (a reproduction of MacKinnon et
al.)."""

__version__ = "0.1.0"
