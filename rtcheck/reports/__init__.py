"""Renderers: a finished report as terminal text or JSON, HTML, PDF and DICOM, with its figures.

Renderers draw what the report says; they never decide a verdict.
"""
