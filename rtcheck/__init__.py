"""rtcheck: checks radiotherapy plans (DICOM-RT) against a clinical-trial protocol."""

__version__ = "0.1.0"
